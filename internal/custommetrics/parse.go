package custommetrics

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mlplane/mlplane/internal/api"
)

// The node agent's per pod and GPU series this package reads
// (internal/gpu/metrics.go, docs/node-agent.md), each with the labels node,
// namespace, pod, pod_uid, gpu and uuid.
const (
	// AgentMemoryUsed is the GPU memory the pod's processes hold, in bytes.
	AgentMemoryUsed = api.MetricPodMemoryUsed
	// AgentMemoryBooked is the GPU memory the pod booked, in bytes.
	AgentMemoryBooked = api.MetricPodMemoryBooked
	// AgentUtilization is the share of the GPU's time the pod's kernels
	// ran, 0..1 (label source: process or memory_share).
	AgentUtilization = api.MetricPodUtilization
)

// maxBytes bounds a pod's memory sums: 2^60 bytes (1 EiB).
const maxBytes float64 = 1 << 60

// Labels of the agent's per-pod series that this server reads; the others
// (node, namespace, pod, uuid, source) only inform.
const (
	labelPodUID = api.MetricLabelPodUID
	labelGPU    = api.MetricLabelGPU
)

// PodGPU is what one scrape of a node agent says about one pod's GPUs.
// Each figure is valid only when its Has field is true: an agent serves the
// series it knows (an agent older than the booked and utilisation series
// serves memory used alone).
type PodGPU struct {
	UID types.UID
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
// over the pod's GPUs, utilisation the maximum. Other series are ignored.
//
// Pods are known by their pod_uid label alone: the Provider names them
// from the API, and an agent that has not yet listed a new pod serves its
// series with empty namespace and pod labels. A per-pod series this server
// cannot use (no pod_uid; a negative, NaN or infinite value; a utilisation
// above 1; a counter or histogram; a sum beyond any GPU memory) is left
// out, and skipped says why, sorted: the rest of the node's figures stay
// good. err is for a response that is not in the exposition format.
func ParseAgentMetrics(r io.Reader, format expfmt.Format) (pods map[types.UID]*PodGPU, skipped []string, err error) {
	dec := expfmt.NewDecoder(r, format)
	pods = map[types.UID]*PodGPU{}
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			slices.Sort(skipped)
			return pods, skipped, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("parse agent metrics: %w", err)
		}
		name := mf.GetName()
		if name != AgentMemoryUsed && name != AgentMemoryBooked && name != AgentUtilization {
			continue
		}
		for _, m := range mf.GetMetric() {
			if err := addSeries(pods, name, m); err != nil {
				skipped = append(skipped, err.Error())
			}
		}
	}
}

// addSeries adds one series to its pod's figures, or says why it cannot.
func addSeries(pods map[types.UID]*PodGPU, family string, m *dto.Metric) error {
	var uid, gpu string
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case labelPodUID:
			uid = l.GetValue()
		case labelGPU:
			gpu = l.GetValue()
		}
	}
	if uid == "" {
		return fmt.Errorf("%s{gpu=%q}: no %s label", family, gpu, labelPodUID)
	}
	var v float64
	switch {
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	default:
		return fmt.Errorf("%s{pod_uid=%q,gpu=%q}: not a gauge", family, uid, gpu)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("%s{pod_uid=%q,gpu=%q}: %v, want a finite value of at least 0", family, uid, gpu, v)
	}
	if family == AgentUtilization && v > 1 {
		return fmt.Errorf("%s{pod_uid=%q,gpu=%q}: %v, want a ratio from 0 to 1", family, uid, gpu, v)
	}
	p := pods[types.UID(uid)]
	if p == nil {
		p = &PodGPU{UID: types.UID(uid)}
	}
	switch family {
	case AgentMemoryUsed:
		if p.MemoryUsedBytes+v > maxBytes {
			return fmt.Errorf("%s{pod_uid=%q,gpu=%q}: the pod's sum exceeds %d bytes", family, uid, gpu, int64(maxBytes))
		}
		p.MemoryUsedBytes += v
		p.HasMemoryUsed = true
	case AgentMemoryBooked:
		if p.MemoryBookedBytes+v > maxBytes {
			return fmt.Errorf("%s{pod_uid=%q,gpu=%q}: the pod's sum exceeds %d bytes", family, uid, gpu, int64(maxBytes))
		}
		p.MemoryBookedBytes += v
		p.HasMemoryBooked = true
	case AgentUtilization:
		p.Utilization = max(p.Utilization, v)
		p.HasUtilization = true
	}
	pods[p.UID] = p
	return nil
}
