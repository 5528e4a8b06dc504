package extender

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	eventsv1 "k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score/state"
)

// ServerOptions are the settings of `extender serve` (see docs/CONTRACTS.md).
type ServerOptions struct {
	// Addr serves the verbs (default :8888).
	Addr string
	// TLS serves the verbs over TLS and requires the scheduler's client
	// certificate (nil: plain HTTP, for tests). Health, metrics and pprof
	// stay plain HTTP on their own addresses.
	TLS *TLSOptions
	// HealthAddr serves /healthz and /readyz: the manager's health probe
	// server (default :8081; "0" disables).
	HealthAddr string
	// MetricsAddr serves /metrics (controller-runtime's metrics.Registry:
	// the extender's metrics beside the Go, process, client and leader
	// election ones) and /leaderz: the manager's metrics server (default
	// :8080; "0" disables).
	MetricsAddr string
	// PprofAddr serves Go's pprof handlers under /debug/pprof/, the
	// manager's PprofBindAddress (default "" or "0": off; they reveal
	// internals and cost CPU when used, as kube-scheduler's --profiling).
	PprofAddr string
	// PolicyPath is the PlacementPolicy file, reloaded on change (default:
	// built-in policy).
	PolicyPath string
	// LeaderElect turns on leader election; only the leader answers the
	// verbs and binds (default false: a single replica). /readyz reports
	// every synced replica ready, /leaderz only the leader.
	LeaderElect bool
	// PodNamespace and PodName name the pod this replica runs in (empty
	// outside a pod). With LeaderElect, the leader puts
	// api.LabelExtenderLeader=true on it, which the extender's Service
	// selects, and a starting replica takes the label off its own pod.
	PodNamespace, PodName string
	// Namespace holds the leader election Lease (default mlplane-system).
	Namespace string
	// Identity is this replica's leader election identity (default: the
	// host name plus a random suffix).
	Identity string
	// Config is the API server connection the manager is built on
	// (required unless Client is set). Client defaults to a clientset of it.
	Config *rest.Config
	// Client talks to the API server: informers, binds, evictions, events
	// and the leader election Lease all go through it. Tests set a fake one
	// and leave Config nil; the manager then gets a configuration that
	// reaches nothing, and makes no calls of its own (its cache and client
	// are not used).
	Client kubernetes.Interface
	// Registry receives the extender's metrics while Serve runs (default
	// controller-runtime's metrics.Registry, which MetricsAddr serves);
	// Serve unregisters them when it returns. Two Serve at once in one
	// process (tests) need a registry each.
	Registry prometheus.Registerer
	// Logger (default: discard).
	Logger logr.Logger
	// MaxConcurrentBinds, BindQueueTimeout and FilterWaitTimeout as in
	// Options.
	MaxConcurrentBinds int
	BindQueueTimeout   time.Duration
	FilterWaitTimeout  time.Duration
	// PolicyPollInterval (default 2s).
	PolicyPollInterval time.Duration
	// ShutdownTimeout bounds the graceful shutdown, the manager's
	// GracefulShutdownTimeout (default 10s). A lost leadership skips it.
	ShutdownTimeout time.Duration
}

func (o *ServerOptions) defaults() error {
	if o.Addr == "" {
		o.Addr = ":8888"
	}
	if o.HealthAddr == "" {
		o.HealthAddr = ":8081"
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = ":8080"
	}
	if o.Namespace == "" {
		o.Namespace = api.DefaultNamespace
	}
	if o.Identity == "" {
		host, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", host, time.Now().UnixNano()%1e6)
	}
	if o.PolicyPollInterval == 0 {
		o.PolicyPollInterval = 2 * time.Second
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.Registry == nil {
		o.Registry = crmetrics.Registry
	}
	switch {
	case o.Client != nil && o.Config == nil:
		o.Config = &rest.Config{}
	case o.Client == nil && o.Config == nil:
		return errors.New("extender: neither a Client nor a Config to build one")
	case o.Client == nil:
		var err error
		if o.Client, err = kubernetes.NewForConfig(o.Config); err != nil {
			return fmt.Errorf("extender: building the client: %w", err)
		}
	}
	return nil
}

// Serve runs the extender until ctx ends, on a controller-runtime manager
// as the webhook does: the manager serves health, metrics and pprof, runs
// the leader election and shuts down gracefully; Serve adds the verbs'
// server, the informers, policy and certificate reloads, preemption and,
// with leader election, what the leader does (leader.go). It is ready
// (/readyz) once the caches have synced, and answers the verbs only once
// the state has been seeded from a consistent list and, with leader
// election, while it leads. A lost leadership ends Serve with the
// manager's error ("leader election lost"): the process exits and restarts
// as a follower with a clean state.
func Serve(ctx context.Context, o ServerOptions) error {
	if err := o.defaults(); err != nil {
		return err
	}
	log := o.Logger
	m := NewMetrics()
	policy, err := LoadPolicyFile(o.PolicyPath, m, log)
	if err != nil {
		return err
	}
	var files *tlsFiles
	if o.TLS != nil {
		if files, err = newTLSFiles(*o.TLS, func(reason string) { m.clientsRefused.WithLabelValues(reason).Inc() }, log.WithName("tls")); err != nil {
			return err
		}
	}
	st := state.New(state.Options{Logger: log.WithName("state")})
	metrics := append(m.collectors(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "reservations",
			Help: "GPU reservations of bound pods the informer has not confirmed yet.",
		}, func() float64 { return float64(st.Reservations()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "booking_edits_total",
			Help: "Edits of a bound pod's GPU annotations that the extender ignored, keeping the booking fixed at bind (each distinct edit once).",
		}, func() float64 { return float64(st.BookingEdits()) }))
	var owned []prometheus.Collector
	defer func() {
		for _, c := range owned {
			o.Registry.Unregister(c)
		}
	}()
	for _, c := range metrics {
		if err := o.Registry.Register(c); err != nil {
			return fmt.Errorf("extender metrics: %w", err)
		}
		owned = append(owned, c)
	}
	// The Go and process metrics, unless the registry has them already
	// (controller-runtime registers them where its controllers are linked
	// in; the extender has none).
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := o.Registry.Register(c); err == nil {
			owned = append(owned, c)
		} else if !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
			return fmt.Errorf("extender metrics: %w", err)
		}
	}

	var leader atomic.Bool
	leader.Store(!o.LeaderElect)
	syncedCh := make(chan struct{}) // closed once the caches have synced
	synced := func() bool {
		select {
		case <-syncedCh:
			return true
		default:
			return false
		}
	}
	ready := func() bool { return synced() && leader.Load() }
	pdbInformers := informers.NewSharedInformerFactory(o.Client, 0)
	pdbs := pdbInformers.Policy().V1().PodDisruptionBudgets()
	pdbLister := pdbs.Lister()
	pdbs.Informer() // registered before Start
	events := eventsv1.NewBroadcaster(&eventsv1.EventSinkImpl{Interface: o.Client.EventsV1()})
	defer events.Shutdown()
	ext := New(Options{Client: o.Client, State: st, Policy: policy, Ready: ready, Leader: leader.Load, Metrics: m, Logger: log.WithName("verbs"),
		MaxConcurrentBinds: o.MaxConcurrentBinds, BindQueueTimeout: o.BindQueueTimeout, FilterWaitTimeout: o.FilterWaitTimeout,
		PDBs: func(ns string) []*policyv1.PodDisruptionBudget {
			list, _ := pdbLister.PodDisruptionBudgets(ns).List(labels.Everything())
			return list
		},
		Events: events.NewRecorder(scheme.Scheme, "mlplane-extender"),
	})

	mopts := manager.Options{
		Logger: log,
		Metrics: metricsserver.Options{BindAddress: o.MetricsAddr, ExtraHandlers: map[string]http.Handler{
			"/leaderz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if !ready() {
					http.Error(w, "not the leader", http.StatusServiceUnavailable)
					return
				}
				fmt.Fprintln(w, "leader")
			}),
		}},
		HealthProbeBindAddress:  o.HealthAddr,
		PprofBindAddress:        o.PprofAddr,
		GracefulShutdownTimeout: &o.ShutdownTimeout,
	}
	if o.LeaderElect {
		if err := leaderElection(&mopts, o); err != nil {
			return err
		}
		// A restarted container of a former leader must not keep receiving
		// the scheduler's calls. Done before any listener is opened, so that
		// a failure here leaves no port bound.
		lctx, done := context.WithTimeout(ctx, 30*time.Second)
		err := labelLeader(lctx, o, false)
		done()
		if err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.Addr, err)
	}
	// Until the manager owns it (mgr.Start), an early return closes it.
	started := false
	defer func() {
		if !started {
			ln.Close()
		}
	}()
	verbs := &http.Server{Handler: ext.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if files != nil {
		verbs.TLSConfig, verbs.ErrorLog = files.config(), handshakeLog(log.WithName("tls"))
		ln = tls.NewListener(ln, verbs.TLSConfig)
	}
	mgr, err := manager.New(o.Config, mopts)
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Every synced replica is ready, so that a Deployment's rolling update
	// can finish; the Service reaches the leader by its label.
	if err := mgr.AddReadyzCheck("caches", func(*http.Request) error {
		if !synced() {
			return errors.New("caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}

	// Every replica serves the verbs: a follower answers that it is not
	// ready, as the scheduler expects of an extender that is starting.
	if err := mgr.Add(&manager.Server{Name: "verbs", Server: verbs, Listener: ln, ShutdownTimeout: &o.ShutdownTimeout}); err != nil {
		return err
	}

	everyReplica := []func(context.Context) error{
		func(ctx context.Context) error {
			if err := st.Start(ctx, o.Client); err != nil {
				return err
			}
			pdbInformers.Start(ctx.Done())
			events.StartRecordingToSink(ctx.Done())
			for typ, ok := range pdbInformers.WaitForCacheSync(ctx.Done()) {
				if !ok {
					return fmt.Errorf("%v informer did not sync: %w", typ, context.Cause(ctx))
				}
			}
			// The informers' first list may come from the API server's
			// watch cache; a quorum list makes sure nothing a predecessor
			// booked is missed (the leader does it when it is elected).
			if !o.LeaderElect {
				n, err := st.SeedFromAPI(ctx, o.Client)
				if err != nil {
					return err
				}
				log.Info("state rebuilt from the API server", "seeded", n)
			}
			close(syncedCh)
			log.Info("caches synced")
			return nil
		},
		func(ctx context.Context) error { policy.Watch(ctx, o.PolicyPollInterval); return nil },
		func(ctx context.Context) error { ext.RunPreemption(ctx, PreemptionInterval); return nil },
		func(ctx context.Context) error {
			wait.UntilWithContext(ctx, func(context.Context) { st.Sweep() }, 10*time.Second)
			return nil
		},
	}
	if files != nil {
		everyReplica = append(everyReplica, func(ctx context.Context) error { files.watch(ctx); return nil })
	}
	for _, f := range everyReplica {
		if err := mgr.Add(unelected(f)); err != nil {
			return err
		}
	}
	var led atomic.Bool
	if o.LeaderElect {
		if err := mgr.Add(leading(o, st, syncedCh, &leader, &led, log.WithName("leader"))); err != nil {
			return err
		}
	}
	log.Info("Starting mlplane extender", "addr", o.Addr, "tls", files != nil, "leaderElect", o.LeaderElect, "identity", o.Identity)
	started = true
	err = mgr.Start(ctx)
	if led.Load() {
		// Whether it stepped down or lost the Lease: the replica exits,
		// and a restart would remove the label in any case.
		lctx, done := context.WithTimeout(context.Background(), 2*time.Second)
		defer done()
		_ = labelLeader(lctx, o, false)
	}
	return err
}

// unelected is a manager runnable that runs on every replica, leader or not.
type unelected func(context.Context) error

func (f unelected) Start(ctx context.Context) error { return f(ctx) }

// NeedLeaderElection is false: see unelected.
func (unelected) NeedLeaderElection() bool { return false }

var _ manager.LeaderElectionRunnable = unelected(nil)
