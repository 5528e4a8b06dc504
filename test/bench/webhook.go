package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// Targets of the webhook benchmark.
const (
	TargetMlplane = "mlplane"
	TargetNoop    = "noop"
)

// WebhookBenchOptions configure WebhookBench.
type WebhookBenchOptions struct {
	// BinDir holds webhook (make build). Default cluster.DefaultBinDir().
	BinDir string
	// NoopBin is the no-op webhook (go build ./hack/noop-webhook). Default
	// <module>/_output/bench/noop-webhook.
	NoopBin string
	// Kubeconfig is an existing cluster the webhook reads namespace labels
	// from. Default: a local cluster (internal/cluster) started for the run.
	Kubeconfig string
	// Clients are the concurrency levels of the throughput runs. Default 1, 8, 64.
	Clients []int
	// Containers are the pod sizes of the latency runs. Default 1, 10, 50.
	Containers []int
	// SizeClients is the concurrency of the pod-size runs. Default 1.
	SizeClients int
	// Duration and Warmup of each load run. Default 5s and 1s.
	Duration, Warmup time.Duration
	// Rounds repeats the whole matrix, the targets' order alternating, and
	// the report gives medians. Default 3.
	Rounds int
	// HTTP1 as in LoadOptions.
	HTTP1 bool
	// Dir keeps logs and certificates. Default: a temporary directory.
	Dir string
	// ProfileDir, when set, starts both servers with Go's pprof handlers and
	// writes <target>.cpu.pprof there: a CPU profile of each server during
	// its first run with ProfileClients clients and one container; and
	// <target>.client.cpu.pprof, the load generator's profile meanwhile.
	ProfileDir string
	// ProfileClients picks the profiled cell. Default 8.
	ProfileClients int
	// WebhookArgs are added to bin/webhook's command line.
	WebhookArgs []string
	// Logf receives progress lines. Default: discarded.
	Logf func(format string, args ...any)
}

// WebhookRun is one load run plus what the server process spent on it.
type WebhookRun struct {
	LoadResult
	// ServerCPUMicros is the server's CPU time (user+system) per answered
	// request, in microseconds.
	ServerCPUMicros float64 `json:"server_cpu_us_per_req"`
	// ClientCPUMicros is the load generator's (this process's) CPU time
	// per answered request, in microseconds.
	ClientCPUMicros float64 `json:"client_cpu_us_per_req"`
	// MachineBusy is the fraction of the machine's CPU time that was busy
	// during the run (1 = every core saturated).
	MachineBusy float64 `json:"machine_busy"`
	// ServerRSSMiB is the server's resident memory after the run.
	ServerRSSMiB float64 `json:"server_rss_mib"`
}

// WebhookCase is one cell of the matrix, every round and their median.
type WebhookCase struct {
	Target     string       `json:"target"`
	Clients    int          `json:"clients"`
	Containers int          `json:"containers"`
	Runs       []WebhookRun `json:"runs"`
	Median     WebhookRun   `json:"median"`
}

// WebhookReport is the result of WebhookBench.
type WebhookReport struct {
	Machine    Machine       `json:"machine"`
	Protocol   string        `json:"protocol"`
	Throughput []WebhookCase `json:"throughput"`
	PodSize    []WebhookCase `json:"pod_size"`
}

func (o *WebhookBenchOptions) setDefaults() error {
	if o.BinDir == "" {
		d, err := cluster.DefaultBinDir()
		if err != nil {
			return err
		}
		o.BinDir = d
	}
	if o.NoopBin == "" {
		root, err := cluster.ModuleRoot()
		if err != nil {
			return err
		}
		o.NoopBin = filepath.Join(root, "_output", "bench", "noop-webhook")
	}
	if len(o.Clients) == 0 {
		o.Clients = []int{1, 8, 64}
	}
	if len(o.Containers) == 0 {
		o.Containers = []int{1, 10, 50}
	}
	if o.SizeClients < 1 {
		o.SizeClients = 1
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Rounds < 1 {
		o.Rounds = 3
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.ProfileClients < 1 {
		o.ProfileClients = 8
	}
	return nil
}

// stopGrace is how long a server under test gets to exit after SIGTERM
// before SIGKILL.
const stopGrace = 10 * time.Second

// webhookServer is a running webhook under test.
type webhookServer struct {
	*runner.Process
	url string
	// pprof is the base URL of its /debug/pprof/ handlers, when started
	// with them.
	pprof string
}

// WebhookBench runs bin/webhook (built-in configuration, namespace labels
// from the cluster) and the no-op webhook side by side, each its own
// process on loopback with the same TLS certificate, and loads them in
// turn: the throughput matrix (1, 8, 64 clients, the one-container vLLM
// pod) and the pod-size matrix (1, 10, 50 containers).
func WebhookBench(ctx context.Context, o WebhookBenchOptions) (*WebhookReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	for _, bin := range []string{filepath.Join(o.BinDir, "webhook"), o.NoopBin} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%s: %w (run make build and go build -o _output/bench/ ./hack/noop-webhook)", bin, err)
		}
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "mlplane-webhook-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.Dir = d
	} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	rep := &WebhookReport{Machine: ThisMachine(), Protocol: "HTTP/2, one connection"}
	if o.HTTP1 {
		rep.Protocol = "HTTP/1.1, one keep-alive connection per client"
	}

	kubeconfig := o.Kubeconfig
	if kubeconfig == "" {
		o.Logf("starting a local cluster for the webhook's namespace lookups")
		c := cluster.New(cluster.Options{BinDir: o.BinDir, Logf: o.Logf})
		if err := c.Start(ctx); err != nil {
			c.DumpLogs(os.Stderr, 20)
			_ = c.Stop()
			return nil, err
		}
		defer c.Stop()
		kubeconfig = c.Kubeconfig()
	}
	if err := ensureBenchNamespace(ctx, kubeconfig); err != nil {
		return nil, err
	}
	certDir := filepath.Join(o.Dir, "certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		return nil, err
	}
	caPEM, err := WriteServingCert(certDir)
	if err != nil {
		return nil, err
	}
	servers := map[string]*webhookServer{}
	for _, t := range []struct{ name, bin string }{
		{TargetMlplane, filepath.Join(o.BinDir, "webhook")},
		{TargetNoop, o.NoopBin},
	} {
		var extra []string
		if t.name == TargetMlplane {
			extra = o.WebhookArgs
		}
		s, err := startWebhookServer(ctx, t.name, t.bin, kubeconfig, certDir, o.Dir, o.ProfileDir != "", extra...)
		if s != nil {
			defer s.Stop(stopGrace)
		}
		if err != nil {
			return nil, err
		}
		servers[t.name] = s
	}

	if o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return nil, err
		}
	}
	profiled := map[string]bool{}
	load := func(target string, clients, containers int) (WebhookRun, error) {
		s := servers[target]
		var profileErr chan error
		if o.ProfileDir != "" && !profiled[target] && clients == o.ProfileClients && containers == 1 {
			profiled[target] = true
			profileErr = make(chan error, 1)
			path := filepath.Join(o.ProfileDir, target+".cpu.pprof")
			go func() {
				// Starts with the warm-up and ends before the run does.
				time.Sleep(o.Warmup)
				d := o.Duration - o.Duration/10
				// The load generator's own profile beside the server's.
				f, err := os.Create(filepath.Join(o.ProfileDir, target+".client.cpu.pprof"))
				if err != nil {
					profileErr <- err
					return
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					profileErr <- err
					return
				}
				err = fetchProfile(ctx, s.pprof, d, path)
				pprof.StopCPUProfile()
				profileErr <- err
			}()
		}
		body, err := AdmissionReview(VLLMPod(BenchNamespace, containers))
		if err != nil {
			return WebhookRun{}, err
		}
		before, err := takeUsage(s.PID())
		if err != nil {
			return WebhookRun{}, err
		}
		res, err := RunLoad(ctx, LoadOptions{
			URL: s.url, Body: body, Clients: clients, Duration: o.Duration, Warmup: o.Warmup,
			CAPEM: caPEM, HTTP1: o.HTTP1, ExpectPatch: target == TargetMlplane,
		})
		if err != nil {
			return WebhookRun{}, err
		}
		after, err := takeUsage(s.PID())
		if err != nil {
			return WebhookRun{}, err
		}
		if profileErr != nil {
			if err := <-profileErr; err != nil {
				return WebhookRun{}, fmt.Errorf("profile of %s: %w", target, err)
			}
		}
		run := WebhookRun{LoadResult: res, ServerRSSMiB: float64(after.server.RSSBytes) / (1 << 20),
			MachineBusy: after.machine.BusySince(before.machine)}
		// CPU over warm-up and measurement, per request answered in both:
		// the measured rate times the whole time approximates the count.
		if n := res.RPS * (o.Duration + o.Warmup).Seconds(); n > 0 {
			run.ServerCPUMicros = float64(after.server.CPU-before.server.CPU) / float64(time.Microsecond) / n
			run.ClientCPUMicros = float64(after.client.CPU-before.client.CPU) / float64(time.Microsecond) / n
		}
		o.Logf("%-7s containers %2d  %s  server CPU %.0f µs/req  client CPU %.0f µs/req  machine busy %.0f%%",
			target, containers, res, run.ServerCPUMicros, run.ClientCPUMicros, 100*run.MachineBusy)
		if res.Requests == 0 {
			return run, fmt.Errorf("%s answered nothing: %s", target, res.FirstError)
		}
		return run, ctx.Err()
	}

	type cell struct{ clients, containers int }
	var cells []cell
	for _, n := range o.Clients {
		cells = append(cells, cell{n, 1})
	}
	for _, n := range o.Containers {
		if c := (cell{o.SizeClients, n}); !slices.Contains(cells, c) {
			cells = append(cells, c)
		}
	}
	runs := map[string]map[cell][]WebhookRun{TargetMlplane: {}, TargetNoop: {}}
	for r := range o.Rounds {
		order := []string{TargetNoop, TargetMlplane}
		if r%2 == 1 {
			order = []string{TargetMlplane, TargetNoop}
		}
		o.Logf("round %d of %d", r+1, o.Rounds)
		for _, c := range cells {
			for _, target := range order {
				run, err := load(target, c.clients, c.containers)
				if err != nil {
					return rep, err
				}
				runs[target][c] = append(runs[target][c], run)
			}
		}
	}
	caseOf := func(target string, c cell) WebhookCase {
		rs := runs[target][c]
		return WebhookCase{Target: target, Clients: c.clients, Containers: c.containers, Runs: rs, Median: medianRun(rs)}
	}
	for _, n := range o.Clients {
		for _, t := range []string{TargetNoop, TargetMlplane} {
			rep.Throughput = append(rep.Throughput, caseOf(t, cell{n, 1}))
		}
	}
	for _, n := range o.Containers {
		for _, t := range []string{TargetNoop, TargetMlplane} {
			rep.PodSize = append(rep.PodSize, caseOf(t, cell{o.SizeClients, n}))
		}
	}
	return rep, nil
}

// medianRun takes the median of every figure separately.
func medianRun(rs []WebhookRun) WebhookRun {
	pick := func(f func(WebhookRun) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return median(xs)
	}
	var m WebhookRun
	if len(rs) == 0 {
		return m
	}
	m.Clients, m.BodyBytes = rs[0].Clients, rs[0].BodyBytes
	for _, r := range rs {
		m.Requests += r.Requests
		m.Errors += r.Errors
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
	}
	m.Seconds = pick(func(r WebhookRun) float64 { return r.Seconds })
	m.RPS = pick(func(r WebhookRun) float64 { return r.RPS })
	m.P50 = pick(func(r WebhookRun) float64 { return r.P50 })
	m.P90 = pick(func(r WebhookRun) float64 { return r.P90 })
	m.P99 = pick(func(r WebhookRun) float64 { return r.P99 })
	m.Max = pick(func(r WebhookRun) float64 { return r.Max })
	m.Mean = pick(func(r WebhookRun) float64 { return r.Mean })
	m.ServerCPUMicros = pick(func(r WebhookRun) float64 { return r.ServerCPUMicros })
	m.ServerRSSMiB = pick(func(r WebhookRun) float64 { return r.ServerRSSMiB })
	m.ClientCPUMicros = pick(func(r WebhookRun) float64 { return r.ClientCPUMicros })
	m.MachineBusy = pick(func(r WebhookRun) float64 { return r.MachineBusy })
	return m
}

func startWebhookServer(ctx context.Context, name, bin, kubeconfig, certDir, dir string, pprof bool, extra ...string) (*webhookServer, error) {
	var ports [4]int
	for i := range ports {
		p, err := runner.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	args := []string{
		"--host=127.0.0.1",
		fmt.Sprintf("--port=%d", ports[0]),
		fmt.Sprintf("--health-addr=127.0.0.1:%d", ports[1]),
		fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[2]),
		"--cert-dir=" + certDir,
		"--kubeconfig=" + kubeconfig,
	}
	if pprof {
		// Both binaries take --pprof-addr.
		args = append(args, fmt.Sprintf("--pprof-addr=127.0.0.1:%d", ports[3]))
	}
	args = append(args, extra...)
	if name == TargetMlplane {
		args = append([]string{"serve"}, args...)
	}
	p := &runner.Process{Name: name, Path: bin, Args: args, LogPath: filepath.Join(dir, name+".log")}
	if err := p.Start(); err != nil {
		return nil, err
	}
	s := &webhookServer{Process: p, url: fmt.Sprintf("https://127.0.0.1:%d%s", ports[0], api.WebhookPath)}
	if pprof {
		s.pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", ports[3])
	}
	return s, p.WaitReady(ctx, time.Minute, runner.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]), false))
}

// ensureBenchNamespace creates BenchNamespace opted in to injection.
func ensureBenchNamespace(ctx context.Context, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: BenchNamespace,
		Labels: map[string]string{api.LabelInject: api.NamespaceInjectEnabled}}}
	_, err = cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// WriteText writes the report as two tables.
func (r *WebhookReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %d CPUs, %s, %s, load average at start %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.LoadAverage)
	fmt.Fprintf(&b, "protocol: %s; medians of %d rounds\n\n", r.Protocol, roundsOf(r.Throughput))
	b.WriteString("throughput (vLLM pod, 1 container)\n")
	b.WriteString("clients | no-op req/s | mlplane req/s | ratio | no-op p50/p99 ms | mlplane p50/p90/p99 ms | mlplane max ms | server CPU µs/req no-op / mlplane | client CPU µs/req no-op / mlplane | machine busy no-op / mlplane | errors\n")
	writePairs(&b, r.Throughput, func(noop, ml WebhookCase) string {
		return fmt.Sprintf("%7d | %11.0f | %13.0f | %4.0f%% | %6.2f / %6.2f | %5.2f / %5.2f / %5.2f | %7.2f | %5.0f / %5.0f | %5.0f / %5.0f | %3.0f%% / %3.0f%% | %d",
			ml.Clients, noop.Median.RPS, ml.Median.RPS, 100*ml.Median.RPS/noop.Median.RPS,
			noop.Median.P50, noop.Median.P99, ml.Median.P50, ml.Median.P90, ml.Median.P99, ml.Median.Max,
			noop.Median.ServerCPUMicros, ml.Median.ServerCPUMicros, noop.Median.ClientCPUMicros, ml.Median.ClientCPUMicros,
			100*noop.Median.MachineBusy, 100*ml.Median.MachineBusy, noop.Median.Errors+ml.Median.Errors)
	})
	if len(r.PodSize) > 0 {
		fmt.Fprintf(&b, "\nlatency against pod size (%d client(s))\n", r.PodSize[0].Clients)
		b.WriteString("containers | review bytes | no-op p50/p99 ms | mlplane p50/p99 ms | mlplane req/s | server CPU µs/req no-op / mlplane\n")
		writePairs(&b, r.PodSize, func(noop, ml WebhookCase) string {
			return fmt.Sprintf("%10d | %12d | %6.2f / %6.2f | %6.2f / %6.2f | %13.0f | %5.0f / %5.0f",
				ml.Containers, ml.Median.BodyBytes, noop.Median.P50, noop.Median.P99, ml.Median.P50, ml.Median.P99,
				ml.Median.RPS, noop.Median.ServerCPUMicros, ml.Median.ServerCPUMicros)
		})
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func roundsOf(cs []WebhookCase) int {
	if len(cs) == 0 {
		return 0
	}
	return len(cs[0].Runs)
}

// writePairs writes one line per (no-op, mlplane) pair of consecutive cases.
func writePairs(b *strings.Builder, cs []WebhookCase, line func(noop, ml WebhookCase) string) {
	for i := 0; i+1 < len(cs); i += 2 {
		noop, ml := cs[i], cs[i+1]
		if noop.Target != TargetNoop || ml.Target != TargetMlplane {
			noop, ml = ml, noop
		}
		b.WriteString(line(noop, ml))
		b.WriteByte('\n')
	}
}

// usage is what a load run is measured by, read before and after it: the
// server's and this process's (the load generator's) usage, and the
// machine's CPU.
type usage struct {
	server, client runner.Usage
	machine        MachineCPU
}

func takeUsage(serverPID int) (u usage, err error) {
	if u.server, err = runner.ReadUsage(serverPID); err != nil {
		return u, err
	}
	if u.client, err = runner.ReadUsage(os.Getpid()); err != nil {
		return u, err
	}
	u.machine, err = ReadMachineCPU()
	return u, err
}

// fetchProfile writes a CPU profile of d from the pprof handlers at base.
func fetchProfile(ctx context.Context, base string, d time.Duration, path string) error {
	secs := max(1, int(d/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%sprofile?seconds=%d", base, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: HTTP %d: %s", req.URL, resp.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
