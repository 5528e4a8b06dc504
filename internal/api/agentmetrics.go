package api

// The node agent's per pod and GPU Prometheus series, which the custom
// metrics API server reads back (internal/gpu serves them,
// internal/custommetrics parses them; docs/node-agent.md lists them). Each
// carries the labels node, namespace, pod, MetricLabelPodUID,
// MetricLabelGPU and uuid; the utilisation also source.
const (
	// MetricPodMemoryUsed is the GPU memory the pod's processes hold on
	// the GPU, in bytes.
	MetricPodMemoryUsed = "mlplane_gpu_pod_memory_used_bytes"
	// MetricPodMemoryBooked is the GPU memory the pod booked on the GPU,
	// in bytes.
	MetricPodMemoryBooked = "mlplane_gpu_pod_memory_booked_bytes"
	// MetricPodUtilization is the share of the GPU's time the pod's
	// kernels ran, 0..1.
	MetricPodUtilization = "mlplane_gpu_pod_utilization_ratio"
	// MetricLabelPodUID and MetricLabelGPU name the pod and the GPU's
	// index on its node.
	MetricLabelPodUID = "pod_uid"
	MetricLabelGPU    = "gpu"
)
