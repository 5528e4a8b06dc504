// Command bench runs mlplane's end-to-end benchmarks (test/bench) and writes
// each report as text (standard output and OUT/NAME.txt) and JSON
// (OUT/NAME.json):
//
//	bench webhook  [--kubeconfig F] [--clients 1,8,64] [--containers 1,10,50] [--duration 5s] [--rounds 3] [--http1]
//	bench agent    [--window 60s]
//	bench short    webhook + agent + admission on one local cluster, then packing
//	bench packing  [--traces 'examples/traces/*.yaml'] [--svg-dir docs/benchmarks]
//	bench admission [--rate 150] [--duration 30s] [--rounds 2] [--containers 1]
//	               (in short: --rate, --admission-duration, --admission-rounds)
//	bench sched    [--nodes 1000] [--pods 5000] [--workers 32] [--modes extender,plain] [--rounds 1] [--backlog]
//	bench custommetrics [--nodes 125] [--pods-per-node 8] [--interval 15s] [--window 60s] [--requests 300]
//	bench gobench  FILE   medians of `go test -bench -count N` output
//
// Common flags: --out DIR (default _output/bench), --bin DIR (default bin/).
// See BENCHMARKS.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/test/bench"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench webhook|agent|short|packing|admission|sched|custommetrics|gobench [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

// report is what every benchmark returns.
type report interface{ WriteText(io.Writer) error }

type options struct {
	out, bin string
	web      bench.WebhookBenchOptions
	agent    bench.AgentOptions
	sched    bench.SchedBenchOptions
	adm      bench.AdmissionBenchOptions
	cm       bench.CustomMetricsOptions
	traces   string
	svgDir   string
}

func run(ctx context.Context, cmd string, args []string) error {
	var o options
	fs := flag.NewFlagSet("bench "+cmd, flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "_output/bench", "directory for the reports")
	fs.StringVar(&o.bin, "bin", "", "directory of the binaries (default bin/ of the module, or $MLPLANE_BIN)")
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	switch cmd {
	case "webhook", "short":
		fs.StringVar(&o.web.NoopBin, "noop", "", "no-op webhook binary (default _output/bench/noop-webhook)")
		fs.Func("clients", "concurrency levels, comma-separated (default 1,8,64)", intList(&o.web.Clients))
		fs.Func("containers", "pod sizes, comma-separated (default 1,10,50)", intList(&o.web.Containers))
		fs.IntVar(&o.web.SizeClients, "size-clients", 1, "concurrency of the pod-size runs")
		fs.DurationVar(&o.web.Duration, "duration", 5*time.Second, "measured time of each load run")
		fs.DurationVar(&o.web.Warmup, "warmup", time.Second, "warm-up before each load run")
		fs.IntVar(&o.web.Rounds, "rounds", 3, "repetitions of the matrix (medians reported)")
		fs.BoolVar(&o.web.HTTP1, "http1", false, "HTTP/1.1, a connection per client, instead of HTTP/2")
		fs.StringVar(&o.web.Dir, "dir", "", "keep the servers' logs and certificates here (default: a temporary directory)")
		fs.StringVar(&o.web.ProfileDir, "profile-dir", "", "write a CPU profile of each server (<target>.cpu.pprof) during its first run with --profile-clients clients here")
		fs.IntVar(&o.web.ProfileClients, "profile-clients", 8, "concurrency of the profiled run")
		fs.Func("webhook-arg", "an argument added to bin/webhook's command line (repeatable)", func(s string) error {
			o.web.WebhookArgs = append(o.web.WebhookArgs, s)
			return nil
		})
		if cmd == "webhook" {
			fs.StringVar(&o.web.Kubeconfig, "kubeconfig", "", "existing cluster (default: start a local one)")
		}
	}
	switch cmd {
	case "agent", "short":
		fs.DurationVar(&o.agent.Window, "window", 60*time.Second, "measured time")
		fs.DurationVar(&o.agent.Warmup, "agent-warmup", 10*time.Second, "time before the measurement")
	}
	switch cmd {
	case "packing", "short":
		fs.StringVar(&o.traces, "traces", "examples/traces/*.yaml", "trace files (a glob)")
		fs.StringVar(&o.svgDir, "svg-dir", "docs/benchmarks", "where the SVGs go (empty: none)")
	}
	switch cmd {
	case "admission", "short":
		fs.Float64Var(&o.adm.Rate, "rate", 150, "pods created per second")
		prefix := "admission-" // short's --rounds and --duration are the webhook's
		if cmd == "admission" {
			prefix = ""
			fs.IntVar(&o.adm.Containers, "containers", 1, "containers in the vLLM pod")
		}
		fs.IntVar(&o.adm.Rounds, prefix+"rounds", 2, "rounds of one run with the webhook and one without")
		fs.DurationVar(&o.adm.Duration, prefix+"duration", 30*time.Second, "each run with or without the webhook")
	}
	if cmd == "custommetrics" {
		fs.IntVar(&o.cm.Nodes, "nodes", 125, "KWOK nodes, each with a stand-in node agent")
		fs.IntVar(&o.cm.PodsPerNode, "pods-per-node", 8, "GPU pods per node")
		fs.DurationVar(&o.cm.Interval, "interval", 15*time.Second, "the server's --interval")
		fs.DurationVar(&o.cm.Window, "window", 60*time.Second, "measured time of the footprint")
		fs.IntVar(&o.cm.Requests, "requests", 300, "requests of each latency series")
	}
	if cmd == "sched" {
		fs.IntVar(&o.sched.Nodes, "nodes", 1000, "KWOK nodes")
		fs.StringVar(&o.sched.GPUs, "gpus", "8x80Gi", "GPUs per node")
		fs.IntVar(&o.sched.Pods, "pods", 5000, "pods per run")
		fs.IntVar(&o.sched.Workers, "workers", 32, "goroutines creating pods")
		qps := fs.Float64("qps", 2000, "client QPS of the creating client")
		fs.Func("modes", "runs, in order: extender, plain (default extender,plain)", func(s string) error {
			o.sched.Modes = strings.Split(s, ",")
			return nil
		})
		fs.IntVar(&o.sched.Rounds, "rounds", 1, "repetitions of the modes")
		fs.StringVar(&o.sched.Dir, "dir", "", "keep the cluster's files (logs) here")
		fs.StringVar(&o.sched.PolicyFile, "policy", "", "the extender's PlacementPolicy file (default: built-in)")
		fs.Func("extender-arg", "an argument added to bin/extender's command line (repeatable)", func(s string) error {
			o.sched.ExtenderArgs = append(o.sched.ExtenderArgs, s)
			return nil
		})
		fs.BoolVar(&o.sched.Backlog, "backlog", false, "create each run's pods with its scheduler stopped, then start it (scheduling alone, as scheduler_perf measures)")
		pct := fs.Int("percentage-of-nodes-to-score", -1, "mlplane-scheduler's percentageOfNodesToScore, 0 for kube-scheduler's adaptive default (default: as in config/scheduler/config.yaml)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		o.sched.ClientQPS = float32(*qps)
		if *pct >= 0 {
			o.sched.PercentageOfNodesToScore = pct
		}
	} else if err := fs.Parse(args); err != nil {
		return err
	}
	if cmd == "gobench" {
		if fs.NArg() != 1 {
			return errors.New("bench gobench FILE")
		}
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := os.MkdirAll(o.out, 0o755); err != nil {
			return err
		}
		rep, err := bench.ParseGoBench(f)
		return emit(o.out, "gobench", rep, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.bin == "" {
		d, err := cluster.DefaultBinDir()
		if err != nil {
			return err
		}
		o.bin = d
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	o.web.BinDir, o.sched.BinDir = o.bin, o.bin
	o.web.Logf, o.agent.Logf, o.sched.Logf, o.adm.Logf, o.cm.Logf = logf, logf, logf, logf, logf

	switch cmd {
	case "webhook":
		rep, err := bench.WebhookBench(ctx, o.web)
		return emit(o.out, "webhook", rep, err)
	case "agent":
		return withCluster(ctx, o.bin, logf, func(c *cluster.Cluster) error {
			rep, err := bench.AgentFootprint(ctx, c, o.agent)
			return emit(o.out, "agent", rep, err)
		})
	case "packing":
		return packing(ctx, o)
	case "short":
		err := withCluster(ctx, o.bin, logf, func(c *cluster.Cluster) error {
			o.web.Kubeconfig = c.Kubeconfig()
			rep, err := bench.WebhookBench(ctx, o.web)
			if err := emit(o.out, "webhook", rep, err); err != nil {
				return err
			}
			arep, err := bench.AgentFootprint(ctx, c, o.agent)
			if err := emit(o.out, "agent", arep, err); err != nil {
				return err
			}
			adrep, err := bench.AdmissionBench(ctx, c, o.adm)
			return emit(o.out, "admission", adrep, err)
		})
		if err != nil {
			return err
		}
		return packing(ctx, o)
	case "admission":
		return withCluster(ctx, o.bin, logf, func(c *cluster.Cluster) error {
			rep, err := bench.AdmissionBench(ctx, c, o.adm)
			return emit(o.out, "admission", rep, err)
		})
	case "sched":
		rep, err := bench.SchedBench(ctx, o.sched)
		return emit(o.out, "sched", rep, err)
	case "custommetrics":
		return withCluster(ctx, o.bin, logf, func(c *cluster.Cluster) error {
			rep, err := bench.CustomMetricsBench(ctx, c, o.cm)
			return emit(o.out, "custommetrics", rep, err)
		})
	default:
		return fmt.Errorf("unknown benchmark %q: want webhook, agent, short, packing, admission, sched, custommetrics or gobench", cmd)
	}
}

func packing(ctx context.Context, o options) error {
	traces, err := filepath.Glob(o.traces)
	if err != nil {
		return err
	}
	if len(traces) == 0 {
		return fmt.Errorf("no trace matches %s", o.traces)
	}
	if o.svgDir != "" {
		if err := os.MkdirAll(o.svgDir, 0o755); err != nil {
			return err
		}
	}
	rep, err := bench.Packing(ctx, filepath.Join(o.bin, "extender"), traces, o.svgDir)
	return emit(o.out, "packing", rep, err)
}

func withCluster(ctx context.Context, bin string, logf func(string, ...any), fn func(*cluster.Cluster) error) error {
	c := cluster.New(cluster.Options{BinDir: bin, Logf: logf})
	if err := c.Start(ctx); err != nil {
		c.DumpLogs(os.Stderr, 20)
		_ = c.Stop()
		return err
	}
	defer c.Stop()
	return fn(c)
}

// emit writes rep (also a partial one returned with err) as text and JSON.
func emit(out, name string, rep report, err error) error {
	if rep == nil || reflect.ValueOf(rep).IsNil() {
		return err
	}
	if werr := rep.WriteText(os.Stdout); werr != nil {
		return werr
	}
	f, ferr := os.Create(filepath.Join(out, name+".txt"))
	if ferr != nil {
		return ferr
	}
	werr := rep.WriteText(f)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	b, jerr := json.MarshalIndent(rep, "", "  ")
	if jerr != nil {
		return jerr
	}
	if werr := os.WriteFile(filepath.Join(out, name+".json"), append(b, '\n'), 0o644); werr != nil {
		return werr
	}
	return err
}

func intList(dst *[]int) func(string) error {
	return func(s string) error {
		*dst = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("%q: want positive whole numbers", f)
			}
			*dst = append(*dst, n)
		}
		return nil
	}
}
