package extender

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the extender's Prometheus metrics.
type Metrics struct {
	latency        *prometheus.HistogramVec
	filterFailures *prometheus.CounterVec
	binds          *prometheus.CounterVec
	badRequests    *prometheus.CounterVec
	// PolicyReloads counts policy file reloads by result (ok, invalid).
	PolicyReloads *prometheus.CounterVec
}

// NewMetrics creates the metrics; Register adds them to a registry.
func NewMetrics() *Metrics {
	return &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "request_duration_seconds",
			Help:    "Time to answer a scheduler extender call, by verb.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"verb"}),
		filterFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "filter_failures_total",
			Help: "Nodes the filter turned down, by reason.",
		}, []string{"reason"}),
		binds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "binds_total",
			Help: "Bind calls, by result.",
		}, []string{"result"}),
		badRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "bad_requests_total",
			Help: "Requests with a body the extender could not read, by verb.",
		}, []string{"verb"}),
		PolicyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mlplane", Subsystem: "extender", Name: "policy_reloads_total",
			Help: "Placement policy reloads, by result.",
		}, []string{"result"}),
	}
}

// Register adds every metric to r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.latency, m.filterFailures, m.binds, m.badRequests, m.PolicyReloads} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
