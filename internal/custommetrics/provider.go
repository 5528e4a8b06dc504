package custommetrics

import (
	"context"
	"math"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata/metadatalister"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// The metrics served for pods (custom.metrics.k8s.io, resource pods).
const (
	// MetricMemoryUsed is the GPU memory the pod's processes hold, in
	// bytes, summed over its GPUs.
	MetricMemoryUsed = "gpu_memory_used_bytes"
	// MetricMemoryBooked is the GPU memory the pod booked, in bytes, summed
	// over its GPUs.
	MetricMemoryBooked = "gpu_memory_booked_bytes"
	// MetricUtilization is the percentage (0-100) of time the pod's kernels
	// ran on the busiest of its GPUs.
	MetricUtilization = "gpu_utilization"
)

// Metrics lists the metric names the Provider serves.
var Metrics = []string{MetricMemoryUsed, MetricMemoryBooked, MetricUtilization}

var podsResource = schema.GroupResource{Resource: "pods"}

// DefaultInterval and DefaultScrapeTimeout are the Collector's defaults.
const (
	DefaultInterval      = 15 * time.Second
	DefaultScrapeTimeout = 5 * time.Second
)

// MaxAge is how old figures may be and still be served, for a collector
// scraping every interval: two intervals, so that one failed or slow
// scrape does not take a pod's figures away.
func MaxAge(interval time.Duration) time.Duration { return 2 * interval }

// Provider answers the custom metrics API from a Store: it implements
// provider.CustomMetricsProvider for the metrics of Metrics on pods. Pods
// are looked up in a lister of Pod metadata, and a pod's figures are served
// only if they were scraped for the pod of that UID (not an earlier pod of
// the same name) within MaxAge.
type Provider struct {
	store  *Store
	pods   metadatalister.Lister
	maxAge time.Duration
	now    func() time.Time
}

var _ provider.CustomMetricsProvider = (*Provider)(nil)

// NewProvider serves store's figures of the pods in pods that are at most
// maxAge old.
func NewProvider(store *Store, pods metadatalister.Lister, maxAge time.Duration) *Provider {
	return &Provider{store: store, pods: pods, maxAge: maxAge, now: time.Now}
}

// GetMetricByName implements provider.CustomMetricsProvider: one pod's
// metric, or NotFound when the pod does not exist or has no fresh figure.
func (p *Provider) GetMetricByName(_ context.Context, name types.NamespacedName, info provider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	if err := p.check(info, metricSelector); err != nil {
		return nil, err
	}
	pod, err := p.pods.Namespace(name.Namespace).Get(name.Name)
	if err != nil {
		return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	v, ok := p.value(pod, info.Metric)
	if !ok {
		return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	return v, nil
}

// GetMetricBySelector implements provider.CustomMetricsProvider: the
// metric of each pod of namespace matching selector that has a fresh
// figure, sorted by pod name; pods without one are left out, as the HPA
// expects (it counts them as missing).
func (p *Provider) GetMetricBySelector(_ context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValueList, error) {
	if err := p.check(info, metricSelector); err != nil {
		return nil, err
	}
	pods, err := p.pods.Namespace(namespace).List(selector)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	slices.SortFunc(pods, func(a, b *metav1.PartialObjectMetadata) int { return strings.Compare(a.Name, b.Name) })
	out := &custom_metrics.MetricValueList{Items: make([]custom_metrics.MetricValue, 0, len(pods))}
	for _, pod := range pods {
		if v, ok := p.value(pod, info.Metric); ok {
			out.Items = append(out.Items, *v)
		}
	}
	return out, nil
}

// ListAllMetrics implements provider.CustomMetricsProvider.
func (p *Provider) ListAllMetrics() []provider.CustomMetricInfo {
	out := make([]provider.CustomMetricInfo, 0, len(Metrics))
	for _, m := range Metrics {
		out = append(out, provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: m})
	}
	return out
}

// check rejects what this provider has no figures for: other resources
// than pods, pods of all namespaces at once, unknown metrics, metric label
// selectors.
func (p *Provider) check(info provider.CustomMetricInfo, metricSelector labels.Selector) error {
	if info.GroupResource != podsResource || !info.Namespaced || !slices.Contains(Metrics, info.Metric) {
		return provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	if metricSelector != nil && !metricSelector.Empty() {
		return apierrors.NewBadRequest("metric label selectors are not supported: " + info.Metric +
			" is one value per pod, over all of its GPUs (metricSelector " + metricSelector.String() + ")")
	}
	return nil
}

// value is pod's metric, if the Store has a fresh figure for it.
func (p *Provider) value(pod *metav1.PartialObjectMetadata, metric string) (*custom_metrics.MetricValue, bool) {
	g, at, ok := p.store.Pod(pod.UID, p.now().Add(-p.maxAge))
	if !ok {
		return nil, false
	}
	var q *resource.Quantity
	switch {
	case metric == MetricMemoryUsed && g.HasMemoryUsed:
		q = resource.NewQuantity(int64(math.Round(g.MemoryUsedBytes)), resource.BinarySI)
	case metric == MetricMemoryBooked && g.HasMemoryBooked:
		q = resource.NewQuantity(int64(math.Round(g.MemoryBookedBytes)), resource.BinarySI)
	case metric == MetricUtilization && g.HasUtilization:
		// percent, to a thousandth: 0.375 -> 37500m
		q = resource.NewMilliQuantity(int64(math.Round(g.Utilization*100*1000)), resource.DecimalSI)
	default:
		return nil, false
	}
	return &custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name},
		Metric:          custom_metrics.MetricIdentifier{Name: metric},
		Timestamp:       metav1.NewTime(at),
		Value:           *q,
	}, true
}
