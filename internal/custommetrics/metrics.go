package custommetrics

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	cmmetrics "sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver/metrics"
)

// The server's own metrics, served with the API server's on its secure
// port's /metrics (docs/autoscaling.md lists them).
var (
	scrapesTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "mlplane", Subsystem: "custom_metrics", Name: "scrapes_total",
		Help:           "Scrapes of node agents by result (success, error).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	skippedSeries = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "mlplane", Subsystem: "custom_metrics", Name: "skipped_series_total",
		Help:           "Per-pod series of node agents left out: no pod_uid, or a value out of range (the log says which).",
		StabilityLevel: metrics.ALPHA,
	})
	roundSeconds = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "mlplane", Subsystem: "custom_metrics", Name: "last_round_duration_seconds",
		Help:           "How long the last round of scrapes of every node agent took.",
		StabilityLevel: metrics.ALPHA,
	})
	freshNodes = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "mlplane", Subsystem: "custom_metrics", Name: "nodes",
		Help:           "Nodes whose figures are fresh enough to be served.",
		StabilityLevel: metrics.ALPHA,
	})
	freshPods = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "mlplane", Subsystem: "custom_metrics", Name: "pods",
		Help:           "Pods whose figures are fresh enough to be served.",
		StabilityLevel: metrics.ALPHA,
	})
)

var registerOnce sync.Once

// registerMetrics registers this package's metrics and the library's
// (request latency, data freshness) with the API server's registry.
func registerMetrics() error {
	var err error
	registerOnce.Do(func() {
		legacyregistry.MustRegister(scrapesTotal, skippedSeries, roundSeconds, freshNodes, freshPods)
		err = cmmetrics.RegisterMetrics(legacyregistry.Register)
	})
	return err
}
