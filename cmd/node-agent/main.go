// Command node-agent publishes a node's GPUs to the API server: the
// mlplane.io/gpus annotation, the mlplane.io/gpu-memory capacity and a
// liveness Lease. See docs/node-agent.md.
//
//	node-agent [run] --node-name NODE [--backend nvml|fake] [--fake-spec 8x80Gi|FILE] ...
//	node-agent inventory [--backend nvml|fake] [--fake-spec ...]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/gpu"
	"github.com/mlplane/mlplane/internal/gpu/nvmlgpu"
	"github.com/mlplane/mlplane/internal/kube"
)

// options are the command-line flags (docs/CONTRACTS.md).
type options struct {
	nodeName       string
	kubeconfig     string
	backend        string
	fakeSpec       string
	pollInterval   time.Duration
	reportInterval time.Duration
	usedThreshold  int64
	metricsAddr    string
	healthAddr     string
	processes      bool
	// Over-budget pods and the published metrics endpoint.
	advertiseAddress string
	overTolerance    int64
	overAfter        time.Duration
	evictOverBudget  bool
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "node-agent:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "inventory") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("node-agent "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME); fake GPU UUIDs derive from it")
	fs.StringVar(&o.backend, "backend", gpu.BackendNVML, "what reads the GPUs: nvml or fake")
	fs.StringVar(&o.fakeSpec, "fake-spec", "", "fake GPUs: e.g. 8x80Gi, 2x80Gi,2x40Gi, or a YAML file re-read at every poll")
	if cmd == "inventory" {
		fs.BoolVar(&o.processes, "processes", false, "also print each GPU process (PID, memory, pod UID from its cgroup) to stderr")
	}
	if cmd == "run" {
		fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (in-cluster configuration when empty)")
		fs.DurationVar(&o.pollInterval, "poll-interval", time.Second, "how often to read the GPUs")
		fs.DurationVar(&o.reportInterval, "report-interval", 30*time.Second, "least time between annotation writes caused by used memory alone")
		fs.Int64Var(&o.usedThreshold, "used-threshold-mib", 1024, "how far used memory must move (MiB) before it is worth a write")
		fs.StringVar(&o.metricsAddr, "metrics-addr", ":8080", "address of /metrics (0 disables)")
		fs.StringVar(&o.healthAddr, "health-addr", ":8081", "address of /healthz and /readyz (0 disables)")
		fs.StringVar(&o.advertiseAddress, "advertise-address", os.Getenv("POD_IP"), "address at which others reach the metrics address, published on the Node as "+api.NodeAnnotationAgentMetrics+" with the metrics port (default $POD_IP; else the metrics address's own host, if it names one)")
		fs.Int64Var(&o.overTolerance, "over-budget-tolerance-mib", 512, "how far (MiB) a pod's GPU processes may use more than it booked on a GPU before it counts as over budget")
		fs.DurationVar(&o.overAfter, "over-budget-after", 30*time.Second, "how long a pod must stay over budget before its Warning event, and between eviction attempts")
		fs.BoolVar(&o.evictOverBudget, "evict-over-budget", false, "evict pods that stay over budget, in namespaces labelled "+api.LabelEvictOverBudget+"=true, through the Eviction API")
		klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
		klog.InitFlags(klogFlags)
		fs.Var(klogFlags.Lookup("v").Value, "v", "log verbosity")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cmd == "inventory" {
		return inventory(o, stdout, stderr)
	}
	o.metricsAddr, o.healthAddr = address(o.metricsAddr), address(o.healthAddr)
	return serve(o)
}

// address is an --*-addr flag as gpu.Serve takes it: "0" turns the server
// off, as for the webhook and the extender (controller-runtime's
// convention), and so does "", the agent's older spelling.
func address(flag string) string {
	if flag == "0" {
		return ""
	}
	return flag
}

// inventory prints the node's GPUs as JSON (the annotation's format) once.
func inventory(o options, stdout, stderr io.Writer) error {
	if o.nodeName == "" {
		o.nodeName, _ = os.Hostname()
	}
	b, name, reason, err := gpu.OpenBackend(o.backend, o.fakeSpec, o.nodeName, nvmlgpu.Open, logr.Discard())
	if err != nil {
		return err
	}
	defer b.Close()
	if name == gpu.BackendNone {
		fmt.Fprintln(stderr, "node-agent: no GPUs:", reason)
	}
	devs, err := b.Devices()
	if err != nil {
		return fmt.Errorf("reading the GPUs: %w", err)
	}
	podUIDs := gpu.NewProcPodUIDs("")
	if o.processes {
		// What the agent reads per process, for hack/gpu-check.sh to set
		// beside nvidia-smi --query-compute-apps.
		for _, d := range devs {
			if !d.ProcessesKnown {
				fmt.Fprintf(stderr, "process %s unknown (NVML could not list this GPU's processes with their memory)\n", d.UUID)
			}
			for _, p := range d.Processes {
				pod, ok := podUIDs.PodUID(p.PID)
				if !ok {
					pod = "-"
				}
				util := "unknown"
				if d.ProcessUtilizationKnown {
					util = fmt.Sprintf("%d%%", p.UtilizationPercent)
				}
				fmt.Fprintf(stderr, "process %s pid=%d usedMiB=%d pod=%s util=%s\n", d.UUID, p.PID, p.UsedMiB, pod, util)
			}
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(gpu.PublishedInventory(devs, podUIDs.PodUID))
}

// gcPercent is the agent's GOGC unless the environment sets one. Its live
// heap is about 2 MiB and it allocates a few KiB a second, so collecting at
// +50% instead of +100% costs nothing measurable and keeps it inside its
// memory budget (docs/node-agent.md).
const gcPercent = 50

func serve(o options) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	log := klog.NewKlogr()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := kube.RESTConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "mlplane-node-agent"
	client, err := gpu.NewRESTAPI(cfg)
	if err != nil {
		return err
	}
	b, name, reason, err := gpu.OpenBackend(o.backend, o.fakeSpec, o.nodeName, nvmlgpu.Open, log)
	if err != nil {
		return err
	}
	defer b.Close()
	if name == gpu.BackendNone {
		log.Info("NVML unavailable: reporting zero GPUs", "reason", reason)
	}
	reg := gpu.Registry()
	agent, err := gpu.NewAgent(gpu.Options{
		NodeName: o.nodeName, Client: client, Backend: b, BackendName: name, BackendReason: reason,
		PollInterval: o.pollInterval, ReportInterval: o.reportInterval, UsedThresholdMiB: o.usedThreshold,
		OverBudgetToleranceMiB: o.overTolerance, OverBudgetAfter: o.overAfter, EvictOverBudget: o.evictOverBudget,
		MetricsEndpoint: metricsEndpoint(o.advertiseAddress, o.metricsAddr),
		Registerer:      reg, Log: log,
	})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- gpu.Serve(ctx, o.metricsAddr, o.healthAddr, reg, agent) }()
	go func() { errc <- agent.Run(ctx) }()
	err = <-errc
	stop()
	return err
}

// metricsEndpoint is the "host:port" others scrape: the advertised address
// with the metrics address's port, else the metrics address when it names a
// host; "" when the metrics server is off or nothing names a host.
func metricsEndpoint(advertise, metricsAddr string) string {
	if metricsAddr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		return ""
	}
	if advertise != "" {
		return net.JoinHostPort(advertise, port)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return ""
	}
	return metricsAddr
}
