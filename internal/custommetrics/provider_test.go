package custommetrics

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

func podMeta(ns, name, uid string, lbls map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Labels: lbls}}
}

func podInfo(metric string) provider.CustomMetricInfo {
	return provider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: metric}
}

// fixture: three pods of app llm in ml; llm-1 has only memory figures (an
// older agent); llm-2's node was last scraped 40s ago; old-name is a pod
// recreated under a name whose figures are for the previous UID.
func newTestProvider(t *testing.T) (*Provider, time.Time) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	app := map[string]string{"app": "llm"}
	pods := lister(t, podsGVR,
		podMeta("ml", "llm-0", "u0", app),
		podMeta("ml", "llm-1", "u1", app),
		podMeta("ml", "llm-2", "u2", app),
		podMeta("ml", "other", "u3", map[string]string{"app": "other"}),
		podMeta("ml", "old-name", "new-uid", app),
		podMeta("elsewhere", "llm-0", "u9", app),
	)
	const gi = 1 << 30
	store := NewStore()
	store.Set("node-a", now.Add(-5*time.Second), map[types.UID]*PodGPU{
		"u0": {UID: "u0", MemoryUsedBytes: 30 * gi, HasMemoryUsed: true,
			MemoryBookedBytes: 40 * gi, HasMemoryBooked: true, Utilization: 0.375, HasUtilization: true},
		"u1":      {UID: "u1", MemoryUsedBytes: 10 * gi, HasMemoryUsed: true},
		"u3":      {UID: "u3", Utilization: 1, HasUtilization: true},
		"old-uid": {UID: "old-uid", Utilization: 0.9, HasUtilization: true},
	})
	store.Set("node-b", now.Add(-40*time.Second), map[types.UID]*PodGPU{
		"u2": {UID: "u2", Utilization: 0.5, HasUtilization: true},
	})
	p := NewProvider(store, pods, MaxAge(15*time.Second))
	p.now = func() time.Time { return now }
	return p, now
}

func TestGetMetricBySelector(t *testing.T) {
	p, now := newTestProvider(t)
	sel := labels.SelectorFromSet(labels.Set{"app": "llm"})
	at := metav1.NewTime(now.Add(-5 * time.Second))
	ref := func(name string) (r struct{ APIVersion, Kind, Namespace, Name string }) {
		r.APIVersion, r.Kind, r.Namespace, r.Name = "v1", "Pod", "ml", name
		return r
	}
	for _, tc := range []struct {
		metric string
		want   map[string]string // pod -> value
	}{
		// llm-1 has no utilisation, llm-2 is stale, old-name's figures are
		// for another UID: only llm-0. 0.375 -> 37.5 percent.
		{MetricUtilization, map[string]string{"llm-0": "37500m"}},
		{MetricMemoryUsed, map[string]string{"llm-0": "30Gi", "llm-1": "10Gi"}},
		{MetricMemoryBooked, map[string]string{"llm-0": "40Gi"}},
	} {
		list, err := p.GetMetricBySelector(context.Background(), "ml", sel, podInfo(tc.metric), labels.Everything())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, it := range list.Items {
			r := ref(it.DescribedObject.Name)
			if it.DescribedObject.APIVersion != r.APIVersion || it.DescribedObject.Kind != r.Kind || it.DescribedObject.Namespace != r.Namespace {
				t.Errorf("%s: described object %+v", tc.metric, it.DescribedObject)
			}
			if it.Metric.Name != tc.metric || !it.Timestamp.Equal(&at) {
				t.Errorf("%s: metric %q at %v, want at %v", tc.metric, it.Metric.Name, it.Timestamp, at)
			}
			got[it.DescribedObject.Name] = it.Value.String()
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.metric, d)
		}
	}
}

func TestGetMetricByName(t *testing.T) {
	p, _ := newTestProvider(t)
	v, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "ml", Name: "other"}, podInfo(MetricUtilization), labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	if want := resource.MustParse("100"); v.Value.Cmp(want) != 0 {
		t.Errorf("other's utilisation = %s, want 100", v.Value.String())
	}
	for _, tc := range []struct {
		ns, name, metric, want string
	}{
		{"ml", "missing", MetricUtilization, "the server could not find the metric gpu_utilization for pods missing"},
		{"ml", "llm-2", MetricUtilization, "the server could not find the metric gpu_utilization for pods llm-2"},
		{"ml", "old-name", MetricUtilization, "the server could not find the metric gpu_utilization for pods old-name"},
		{"ml", "llm-1", MetricMemoryBooked, "the server could not find the metric gpu_memory_booked_bytes for pods llm-1"},
		{"elsewhere", "llm-0", MetricMemoryUsed, "the server could not find the metric gpu_memory_used_bytes for pods llm-0"},
		{"ml", "llm-0", "cpu_usage", "the server could not find the metric cpu_usage for pods"},
	} {
		_, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: tc.ns, Name: tc.name}, podInfo(tc.metric), labels.Everything())
		if !apierrors.IsNotFound(err) || err.Error() != tc.want {
			t.Errorf("%s/%s %s: error %v, want NotFound %q", tc.ns, tc.name, tc.metric, err, tc.want)
		}
	}
}

func TestProviderRefuses(t *testing.T) {
	p, _ := newTestProvider(t)
	ctx := context.Background()
	nodes := provider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "nodes"}, Metric: MetricUtilization}
	if _, err := p.GetMetricBySelector(ctx, "", labels.Everything(), nodes, labels.Everything()); !apierrors.IsNotFound(err) ||
		err.Error() != "the server could not find the metric gpu_utilization for nodes" {
		t.Errorf("nodes: %v", err)
	}
	all := podInfo(MetricUtilization)
	all.Namespaced = false
	if _, err := p.GetMetricBySelector(ctx, "", labels.Everything(), all, labels.Everything()); !apierrors.IsNotFound(err) {
		t.Errorf("pods of every namespace: %v, want NotFound", err)
	}
	_, err := p.GetMetricBySelector(ctx, "ml", labels.Everything(), podInfo(MetricUtilization), labels.SelectorFromSet(labels.Set{"gpu": "0"}))
	if !apierrors.IsBadRequest(err) || err.Error() != "metric label selectors are not supported: gpu_utilization is one value per pod, over all of its GPUs (metricSelector gpu=0)" {
		t.Errorf("metric selector: %v", err)
	}
}

func TestListAllMetrics(t *testing.T) {
	p, _ := newTestProvider(t)
	var got []string
	for _, m := range p.ListAllMetrics() {
		if m.GroupResource.String() != "pods" || !m.Namespaced {
			t.Errorf("%v", m)
		}
		got = append(got, m.Metric)
	}
	if d := cmp.Diff([]string{"gpu_memory_used_bytes", "gpu_memory_booked_bytes", "gpu_utilization"}, got); d != "" {
		t.Error(d)
	}
}
