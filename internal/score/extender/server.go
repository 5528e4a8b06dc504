package extender

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	eventsv1 "k8s.io/client-go/tools/events"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score/state"
)

// ServerOptions are the settings of `extender serve` (see docs/CONTRACTS.md).
type ServerOptions struct {
	// Addr serves the verbs (default :8888).
	Addr string
	// TLS serves the verbs over TLS and requires the scheduler's client
	// certificate (nil: plain HTTP, for tests). /healthz, /readyz and
	// /metrics stay plain HTTP on their own addresses.
	TLS *TLSOptions
	// HealthAddr serves /healthz and /readyz (default :8081).
	HealthAddr string
	// MetricsAddr serves /metrics (default :8080).
	MetricsAddr string
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
	// Client talks to the API server (required).
	Client kubernetes.Interface
	// Logger (default: discard).
	Logger logr.Logger
	// MaxConcurrentBinds, BindQueueTimeout and FilterWaitTimeout as in
	// Options.
	MaxConcurrentBinds int
	BindQueueTimeout   time.Duration
	FilterWaitTimeout  time.Duration
	// Profiling serves Go's pprof handlers under /debug/pprof/ beside
	// /metrics (default false: they reveal internals and cost CPU when
	// used, as kube-scheduler's --profiling).
	Profiling bool
	// PolicyPollInterval (default 2s).
	PolicyPollInterval time.Duration
	// ShutdownTimeout bounds the graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
	// Listening, when set, receives the bound address of each listener
	// ("addr", "health", "metrics"); tests use ":0" and read it back.
	Listening func(name, addr string)
}

func (o *ServerOptions) defaults() {
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
}

// ErrLostLeadership ends Serve when this replica stops being the leader;
// the process exits and restarts as a follower with a clean state.
var ErrLostLeadership = errors.New("lost leadership")

// Serve runs the extender until ctx ends: informers, policy reloads, leader
// election if asked, and the three HTTP servers. It is ready only once the
// caches have synced and the state has been seeded from a consistent list,
// and, with leader election, only while it leads.
func Serve(ctx context.Context, o ServerOptions) error {
	o.defaults()
	log := o.Logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := NewMetrics()
	if err := m.Register(reg); err != nil {
		return err
	}
	policy, err := LoadPolicyFile(o.PolicyPath, m, log)
	if err != nil {
		return err
	}
	st := state.New(state.Options{Logger: log.WithName("state")})
	reservations := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "mlplane", Subsystem: "extender", Name: "reservations",
		Help: "GPU reservations of bound pods the informer has not confirmed yet.",
	}, func() float64 { return float64(st.Reservations()) })
	reg.MustRegister(reservations)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "mlplane", Subsystem: "extender", Name: "booking_edits_total",
		Help: "Edits of a bound pod's GPU annotations that the extender ignored, keeping the booking fixed at bind (each distinct edit once).",
	}, func() float64 { return float64(st.BookingEdits()) }))
	var files *tlsFiles
	if o.TLS != nil {
		if files, err = newTLSFiles(*o.TLS, func(reason string) { m.clientsRefused.WithLabelValues(reason).Inc() }, log.WithName("tls")); err != nil {
			return err
		}
	}

	var synced, leader atomic.Bool
	leader.Store(!o.LeaderElect)
	ready := func() bool { return synced.Load() && leader.Load() }
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

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g, gctx := errgroup.WithContext(ctx)

	health := http.NewServeMux()
	health.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	// Every synced replica is ready, so that a Deployment's rolling update
	// can finish; the Service reaches the leader by its label.
	health.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !synced.Load() {
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	health.HandleFunc("GET /leaderz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not the leader", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "leader")
	})
	metrics := http.NewServeMux()
	metrics.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if o.Profiling {
		metrics.HandleFunc("/debug/pprof/", pprof.Index)
		metrics.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		metrics.HandleFunc("/debug/pprof/profile", pprof.Profile)
		metrics.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		metrics.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}

	for _, s := range []struct {
		name, addr string
		h          http.Handler
	}{{"addr", o.Addr, ext.Handler()}, {"health", o.HealthAddr, health}, {"metrics", o.MetricsAddr, metrics}} {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", s.addr, err)
		}
		if o.Listening != nil {
			o.Listening(s.name, ln.Addr().String())
		}
		srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
		serve := srv.Serve
		if s.name == "addr" && files != nil {
			srv.TLSConfig, srv.ErrorLog = files.config(), handshakeLog(log.WithName("tls"))
			serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
		}
		g.Go(func() error {
			if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s server: %w", s.name, err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, done := context.WithTimeout(context.Background(), o.ShutdownTimeout)
			defer done()
			return srv.Shutdown(sctx)
		})
	}

	g.Go(func() error {
		if err := st.Start(gctx, o.Client); err != nil {
			return err
		}
		pdbInformers.Start(gctx.Done())
		events.StartRecordingToSink(gctx.Done())
		for typ, ok := range pdbInformers.WaitForCacheSync(gctx.Done()) {
			if !ok {
				return fmt.Errorf("%v informer did not sync: %w", typ, context.Cause(gctx))
			}
		}
		// The informers' first list may come from the API server's watch
		// cache; a quorum list makes sure nothing a predecessor booked
		// is missed.
		if !o.LeaderElect {
			n, err := st.SeedFromAPI(gctx, o.Client)
			if err != nil {
				return err
			}
			log.Info("state rebuilt from the API server", "seeded", n)
		}
		synced.Store(true)
		log.Info("caches synced")
		return nil
	})
	g.Go(func() error {
		policy.Watch(gctx, o.PolicyPollInterval)
		return nil
	})
	if files != nil {
		g.Go(func() error {
			files.watch(gctx)
			return nil
		})
	}
	g.Go(func() error {
		ext.RunPreemption(gctx, PreemptionInterval)
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				st.Sweep()
			}
		}
	})
	if o.LeaderElect {
		g.Go(func() error {
			// A restarted container of a former leader must not keep
			// receiving the scheduler's calls.
			if err := labelLeader(gctx, o, false); err != nil {
				return err
			}
			err := RunLeaderElection(gctx, LeaderOptions{
				Client: o.Client, Namespace: o.Namespace, Identity: o.Identity, Logger: log.WithName("leader"),
				OnStarted: func(ctx context.Context) error {
					// Wait for the caches, then read what the old leader
					// booked last, before binding anything.
					for !synced.Load() {
						select {
						case <-ctx.Done():
							return ctx.Err()
						case <-time.After(50 * time.Millisecond):
						}
					}
					n, err := st.SeedFromAPI(ctx, o.Client)
					log.Info("state seeded for leadership", "seeded", n)
					if err != nil {
						return err
					}
					return labelLeader(ctx, o, true)
				},
				OnStopped: func() {
					// Best effort: the replica exits, and its restart
					// removes the label in any case.
					lctx, done := context.WithTimeout(context.Background(), 2*time.Second)
					defer done()
					_ = labelLeader(lctx, o, false)
					cancel(ErrLostLeadership)
				},
			}, leader.Store)
			if err != nil {
				return err
			}
			if cause := context.Cause(ctx); errors.Is(cause, ErrLostLeadership) {
				return ErrLostLeadership
			}
			return nil
		})
	}
	err = g.Wait()
	if cause := context.Cause(ctx); err == nil && errors.Is(cause, ErrLostLeadership) {
		return ErrLostLeadership
	}
	return err
}

// labelLeader sets (on) or removes api.LabelExtenderLeader on the replica's
// own pod, when it runs in one. The removal of an absent label and a pod
// that no longer exists are not errors.
func labelLeader(ctx context.Context, o ServerOptions, on bool) error {
	if o.PodName == "" || o.PodNamespace == "" {
		return nil
	}
	value := "null"
	if on {
		value = `"true"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, api.LabelExtenderLeader, value)
	_, err := o.Client.CoreV1().Pods(o.PodNamespace).Patch(ctx, o.PodName, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: api.FieldManager})
	if err != nil && !(apierrors.IsNotFound(err) && !on) {
		return fmt.Errorf("label pod %s/%s %s=%t: %w", o.PodNamespace, o.PodName, api.LabelExtenderLeader, on, err)
	}
	return nil
}
