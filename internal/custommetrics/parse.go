package custommetrics

import (
	"errors"
	"fmt"
	"io"
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"k8s.io/apimachinery/pkg/types"
)

// The node agent's per pod and GPU series this package reads
// (internal/gpu/metrics.go, docs/node-agent.md), each with the labels node,
// namespace, pod, pod_uid, gpu and uuid.
const (
	// AgentMemoryUsed is the GPU memory the pod's processes hold, in bytes.
	AgentMemoryUsed = "mlplane_gpu_pod_memory_used_bytes"
	// AgentMemoryBooked is the GPU memory the pod booked, in bytes.
	AgentMemoryBooked = "mlplane_gpu_pod_memory_booked_bytes"
	// AgentUtilization is the share of the GPU's time the pod's kernels
	// ran, 0..1 (label source: process or memory_share).
	AgentUtilization = "mlplane_gpu_pod_utilization_ratio"
)

// maxBytes bounds a pod's memory sums: 2^60 bytes (1 EiB).
const maxBytes float64 = 1 << 60

// Labels of the agent's per-pod series.
const (
	labelNamespace = "namespace"
	labelPod       = "pod"
	labelPodUID    = "pod_uid"
)

// PodGPU is what one scrape of a node agent says about one pod's GPUs.
// Each figure is valid only when its Has field is true: an agent serves the
// series it knows (an agent older than the booked and utilisation series
// serves memory used alone).
type PodGPU struct {
	Namespace, Name string
	UID             types.UID
	// MemoryUsedBytes is the GPU memory the pod's processes hold, summed
	// over its GPUs.
	MemoryUsedBytes float64
	HasMemoryUsed   bool
	// MemoryBookedBytes is the GPU memory the pod booked, summed over its
	// GPUs.
	MemoryBookedBytes float64
	HasMemoryBooked   bool
	// Utilization is the share of time the pod's kernels ran on the
	// busiest of its GPUs, 0..1.
	Utilization    float64
	HasUtilization bool
}

// ParseAgentMetrics reads one node agent's /metrics, in the Prometheus
// text format or delimited protobuf (format, from expfmt.ResponseFormat),
// and returns the figures of each pod it reports, by pod UID: memory summed
// over the pod's GPUs, utilisation the maximum. Other series are ignored. A
// per-pod series without a pod_uid, namespace or pod label, or with a
// negative, NaN or infinite value, is an error: the agent is not speaking
// the format this server knows.
func ParseAgentMetrics(r io.Reader, format expfmt.Format) (map[types.UID]*PodGPU, error) {
	dec := expfmt.NewDecoder(r, format)
	pods := map[types.UID]*PodGPU{}
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			return pods, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parse agent metrics: %w", err)
		}
		name := mf.GetName()
		if name != AgentMemoryUsed && name != AgentMemoryBooked && name != AgentUtilization {
			continue
		}
		for _, m := range mf.GetMetric() {
			if err := addSeries(pods, name, m); err != nil {
				return nil, err
			}
		}
	}
}

func addSeries(pods map[types.UID]*PodGPU, family string, m *dto.Metric) error {
	var ns, pod, uid string
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case labelNamespace:
			ns = l.GetValue()
		case labelPod:
			pod = l.GetValue()
		case labelPodUID:
			uid = l.GetValue()
		}
	}
	if uid == "" || ns == "" || pod == "" {
		return fmt.Errorf("agent metrics: a %s series lacks one of the labels %s, %s, %s (has %s=%q %s=%q %s=%q)",
			family, labelNamespace, labelPod, labelPodUID, labelNamespace, ns, labelPod, pod, labelPodUID, uid)
	}
	var v float64
	switch {
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	default:
		return fmt.Errorf("agent metrics: %s of pod %s/%s is not a gauge", family, ns, pod)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("agent metrics: %s of pod %s/%s is %v, want a finite value of at least 0", family, ns, pod, v)
	}
	if family == AgentUtilization && v > 1 {
		return fmt.Errorf("agent metrics: %s of pod %s/%s is %v, want a ratio from 0 to 1", family, ns, pod, v)
	}
	p := pods[types.UID(uid)]
	if p == nil {
		p = &PodGPU{Namespace: ns, Name: pod, UID: types.UID(uid)}
		pods[p.UID] = p
	}
	switch family {
	case AgentMemoryUsed:
		p.MemoryUsedBytes += v
		p.HasMemoryUsed = true
	case AgentMemoryBooked:
		p.MemoryBookedBytes += v
		p.HasMemoryBooked = true
	case AgentUtilization:
		p.Utilization = max(p.Utilization, v)
		p.HasUtilization = true
	}
	// Far beyond any GPU's memory, but it must stay a number the API can
	// serve (an int64 of bytes).
	if p.MemoryUsedBytes > maxBytes || p.MemoryBookedBytes > maxBytes {
		return fmt.Errorf("agent metrics: the GPU memory of pod %s/%s sums to more than %d bytes", ns, pod, int64(maxBytes))
	}
	return nil
}
