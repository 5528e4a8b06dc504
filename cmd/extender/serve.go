package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/klog/v2"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/kube"
	"github.com/mlplane/mlplane/internal/score/extender"
)

// Client rate limits (--kube-api-qps, --kube-api-burst): the extender
// creates a Binding per pod (carrying the GPU annotation), and a burst of
// pods must not queue behind client-go's default 5 QPS. The API server's
// priority and fairness protects it; kube-scheduler's own binds are not
// limited below the extender's.
const (
	clientQPS   = 500
	clientBurst = 1000
)

func runServe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o extender.ServerOptions
	var kubeconfig string
	fs.StringVar(&o.Addr, "addr", ":8888", "address of the extender verbs (POST /filter /prioritize /bind), served over TLS")
	var certDir, clientNames string
	var insecure bool
	fs.StringVar(&certDir, "cert-dir", "", "directory with tls.crt and tls.key (the verbs' serving certificate) and ca.crt (the CAs the scheduler's client certificate must chain to), re-read when they change; required unless --insecure-serving")
	fs.StringVar(&clientNames, "client-names", api.ExtenderClientName, "comma-separated common names a client certificate may carry")
	fs.BoolVar(&insecure, "insecure-serving", false, "serve the verbs over plain HTTP to anyone who can connect (tests and development only)")
	fs.StringVar(&o.HealthAddr, "health-addr", ":8081", "address of /healthz and /readyz (0 disables)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":8080", "address of /metrics and /leaderz (0 disables)")
	fs.StringVar(&o.PprofAddr, "pprof-addr", "0", "address of Go's /debug/pprof/ handlers (0 disables)")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (in-cluster config when empty)")
	fs.StringVar(&o.PolicyPath, "policy", "", "PlacementPolicy YAML file, reloaded on change (built-in policy when empty)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader among replicas; only the leader answers the verbs and binds (in a pod, with POD_NAME and POD_NAMESPACE set, it labels its pod mlplane.io/extender-leader=true)")
	var qps float64
	var burst int
	fs.Float64Var(&qps, "kube-api-qps", clientQPS, "queries per second to the API server")
	fs.IntVar(&burst, "kube-api-burst", clientBurst, "burst of queries to the API server")
	fs.IntVar(&o.MaxConcurrentBinds, "max-concurrent-binds", extender.DefaultMaxConcurrentBinds, "binds working at once; more wait for a slot")
	fs.DurationVar(&o.BindQueueTimeout, "bind-queue-timeout", extender.DefaultBindQueueTimeout, "how long a bind waits for a slot before it is refused as busy (keep it below the scheduler's httpTimeout)")
	fs.DurationVar(&o.FilterWaitTimeout, "filter-wait-timeout", extender.DefaultFilterWaitTimeout, "how long a filter call waits while more binds wait for a slot than there are slots (keep it below the scheduler's httpTimeout)")
	fs.StringVar(&o.Namespace, "namespace", api.DefaultNamespace, "namespace of the leader election Lease")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(flagValue{klogFlags.Lookup("v")}, "v", "log verbosity")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "unexpected arguments %v", fs.Args())
	}
	switch {
	case certDir == "" && !insecure:
		return usageError(stderr, "--cert-dir is required: the verbs bind pods with the extender's RBAC and are served only over TLS to the scheduler's client certificate (--insecure-serving for plain HTTP in tests)")
	case certDir != "" && insecure:
		return usageError(stderr, "--cert-dir and --insecure-serving exclude each other")
	case certDir != "":
		var names []string
		for _, n := range strings.Split(clientNames, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return usageError(stderr, "--client-names is empty: name the common name of the scheduler's client certificate")
		}
		o.TLS = &extender.TLSOptions{CertDir: certDir, ClientNames: names}
	}
	cfg, err := kube.RESTConfig(kubeconfig)
	if err != nil {
		klog.ErrorS(err, "loading kubeconfig")
		return 1
	}
	if qps <= 0 || burst <= 0 || o.MaxConcurrentBinds <= 0 || o.BindQueueTimeout <= 0 || o.FilterWaitTimeout <= 0 {
		return usageError(stderr, "--kube-api-qps, --kube-api-burst, --max-concurrent-binds, --bind-queue-timeout and --filter-wait-timeout must be positive")
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
	cfg.UserAgent = "mlplane-extender"
	o.Config = cfg
	if id := os.Getenv("POD_NAME"); id != "" {
		o.Identity = id
	}
	o.PodName, o.PodNamespace = os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	o.Logger = klog.Background()
	crlog.SetLogger(o.Logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A lost leadership ends Serve with an error too: the process exits
	// and restarts as a follower with a clean state.
	if err := extender.Serve(ctx, o); err != nil {
		klog.ErrorS(err, "extender stopped")
		return 1
	}
	return 0
}

// flagValue forwards one flag to klog's flag set.
type flagValue struct{ f *flag.Flag }

func (v flagValue) String() string {
	if v.f == nil {
		return ""
	}
	return v.f.Value.String()
}
func (v flagValue) Set(s string) error { return v.f.Value.Set(s) }
