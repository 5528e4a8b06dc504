package extender

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the extender's Prometheus metrics.
type Metrics struct {
	latency        *prometheus.HistogramVec
	filterFailures *prometheus.CounterVec
	binds          *prometheus.CounterVec
	filterHolds    prometheus.Counter
	bindPodSource  *prometheus.CounterVec
	filterWaits    prometheus.Counter
	badRequests    *prometheus.CounterVec
	// preemptions counts preemptions by who chose the node: "scheduler"
	// (the preempt verb) or "extender" (RunPreemption).
	preemptions       *prometheus.CounterVec
	preemptionVictims prometheus.Counter
	// PolicyReloads counts policy file reloads by result (ok, invalid).
	PolicyReloads *prometheus.CounterVec
	// clientsRefused counts TLS clients refused, by reason.
	clientsRefused *prometheus.CounterVec
}

// NewMetrics creates the metrics; Register adds them to a registry.
func NewMetrics() *Metrics {
	return &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "request_duration_seconds",
			Help:    "Time to answer a scheduler extender call, by verb.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"verb"}),
		filterFailures: counterVec("filter_failures_total", "Nodes the filter turned down, by reason.", "reason"),
		binds:          counterVec("binds_total", "Bind calls, by result.", "result"),
		filterHolds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "filter_holds_total",
			Help: "GPUs held at filter time for the one node handed back, until the bind.",
		}),
		filterWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "filter_waits_total",
			Help: "Filter calls held while more binds waited for a slot than there are slots.",
		}),
		bindPodSource:  counterVec("bind_pod_source_total", "Where a bind found its pod: the informer's cache, the filter call, or a GET.", "source"),
		badRequests:    counterVec("bad_requests_total", "Requests with a body the extender could not read, by verb.", "verb"),
		PolicyReloads:  counterVec("policy_reloads_total", "Placement policy reloads, by result.", "result"),
		clientsRefused: counterVec("clients_refused_total", "TLS clients of the verbs refused: no client certificate, one not chained to ca.crt for client authentication (untrusted), or issued to a name not accepted.", "reason"),
		preemptions:    counterVec("preemptions_total", "Preemptions the extender chose victims for: by the preempt verb (scheduler) or on its own for a per-GPU shortage the scheduler cannot see (extender).", "by"),
		preemptionVictims: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "preemption_evictions_total",
			Help: "Pods the extender evicted through the Eviction API to make room for a pod of higher priority.",
		}),
	}
}

// counterVec is a counter mlplane_extender_<name> partitioned by label.
func counterVec(name, help, label string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "mlplane", Subsystem: "extender", Name: name, Help: help,
	}, []string{label})
}

// Register adds every metric to r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// collectors are the metrics Register adds.
func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.latency, m.filterFailures, m.binds, m.filterHolds, m.bindPodSource, m.filterWaits, m.badRequests, m.PolicyReloads, m.preemptions, m.preemptionVictims, m.clientsRefused}
}
