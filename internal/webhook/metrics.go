package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Request results, the values of the result label of RequestsTotal.
const (
	ResultMutated    = "mutated"     // allowed with a patch
	ResultSkipped    = "skipped"     // allowed unchanged
	ResultDenied     = "denied"      // an invalid annotation
	ResultBadRequest = "bad_request" // malformed or oversized HTTP request
	ResultError      = "error"       // the webhook could not decide (namespace lookup failed)
)

var results = []string{ResultMutated, ResultSkipped, ResultDenied, ResultBadRequest, ResultError}

// Metrics are the webhook's Prometheus metrics.
type Metrics struct {
	requests map[string]prometheus.Counter
	latency  prometheus.Histogram
	reloads  map[bool]prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mlplane_webhook_requests_total",
		Help: "Admission requests to /mutate-pods, by result (mutated, skipped, denied, bad_request, error).",
	}, []string{"result"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mlplane_webhook_request_duration_seconds",
		Help:    "Time to answer an admission request, from the request to the written response.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
	})
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mlplane_webhook_config_reloads_total",
		Help: "InjectionConfig file reloads, by result (success, failure); a failure keeps the previous config.",
	}, []string{"result"})
	if reg != nil {
		reg.MustRegister(requests, latency, reloads)
	}
	m := &Metrics{
		requests: make(map[string]prometheus.Counter, len(results)),
		latency:  latency,
		reloads:  map[bool]prometheus.Counter{true: reloads.WithLabelValues("success"), false: reloads.WithLabelValues("failure")},
	}
	for _, r := range results {
		m.requests[r] = requests.WithLabelValues(r)
	}
	return m
}

func (m *Metrics) observe(result string, d time.Duration) {
	m.requests[result].Inc()
	m.latency.Observe(d.Seconds())
}

func (m *Metrics) reloaded(ok bool) { m.reloads[ok].Inc() }
