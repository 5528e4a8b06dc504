package gpu

import (
	"errors"
	"strconv"
	"sync"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names and help texts; docs/node-agent.md lists them.
var (
	descMemTotal = prometheus.NewDesc("mlplane_gpu_memory_total_bytes",
		"Total memory of the GPU.", []string{"node", "gpu", "uuid", "model"}, nil)
	descMemUsed = prometheus.NewDesc("mlplane_gpu_memory_used_bytes",
		"Memory in use on the GPU, as the driver reports it.", []string{"node", "gpu", "uuid", "model"}, nil)
	descUtil = prometheus.NewDesc("mlplane_gpu_utilization_ratio",
		"Fraction of the last sample period during which a kernel ran on the GPU (NVML utilization.gpu / 100).", []string{"node", "gpu", "uuid", "model"}, nil)
	descHealthy = prometheus.NewDesc("mlplane_gpu_healthy",
		"1 when the GPU is healthy, 0 when it is not; reason says why.", []string{"node", "gpu", "uuid", "model", "reason"}, nil)
	descPodMem = prometheus.NewDesc(api.MetricPodMemoryUsed,
		"GPU memory held by the processes of a pod on a GPU (NVML running processes mapped to pods through /proc/<pid>/cgroup).",
		[]string{"node", "namespace", "pod", api.MetricLabelPodUID, api.MetricLabelGPU, "uuid"}, nil)
	descPodBooked = prometheus.NewDesc(api.MetricPodMemoryBooked,
		"GPU memory a pod with processes on a GPU booked there (its mlplane.io/gpu-memory per GPU).",
		[]string{"node", "namespace", "pod", api.MetricLabelPodUID, api.MetricLabelGPU, "uuid"}, nil)
	descPodUtil = prometheus.NewDesc(api.MetricPodUtilization,
		"A pod's share of the GPU's time, 0..1: with source=process, the sum of its processes' NVML per-process utilisation samples (smUtil) over the last poll; with source=memory_share, where the driver gives no per-process samples, the GPU's utilisation times the pod's share of the GPU processes' memory.",
		[]string{"node", "namespace", "pod", api.MetricLabelPodUID, api.MetricLabelGPU, "uuid", "source"}, nil)
	descPodOver = prometheus.NewDesc("mlplane_gpu_pod_over_budget",
		"1 while a pod's processes have used more GPU memory on the GPU than it booked, by more than --over-budget-tolerance-mib, for longer than --over-budget-after; else 0.",
		[]string{"node", "namespace", "pod", api.MetricLabelPodUID, api.MetricLabelGPU, "uuid"}, nil)
	descDevices = prometheus.NewDesc("mlplane_gpu_devices",
		"Number of GPUs the backend reports.", []string{"node"}, nil)
)

// podUsage is the GPU memory of one pod's processes on one GPU, what the
// pod booked there, and its utilisation of the GPU.
type podUsage struct {
	uid, namespace, name string
	gpu                  int
	uuid                 string
	usedMiB, bookedMiB   int64
	// utilPercent is 0..100; utilSource says how it was found.
	utilPercent float64
	utilSource  string
	// overBudget is set while the pod has been over its booking by more
	// than the tolerance for longer than the grace (see overBudget).
	overBudget bool
}

// Sources of a pod's utilisation (label source of
// mlplane_gpu_pod_utilization_ratio).
const (
	utilProcess     = "process"
	utilMemoryShare = "memory_share"
)

// metrics holds the agent's metrics. Per-GPU and per-pod series are served
// from the last poll's snapshot, so a GPU or a pod that goes away stops being
// reported at once.
type metrics struct {
	node string

	backendUp     prometheus.Gauge
	backendInfo   *prometheus.GaugeVec
	nvmlAvailable prometheus.Gauge
	backendErrors prometheus.Counter
	apiWrites     *prometheus.CounterVec
	// overBudgetEvictions counts evictions of pods over their GPU memory
	// budget, by result (evicted, refused).
	overBudgetEvictions *prometheus.CounterVec

	mu   sync.Mutex
	devs []Device
	pods []podUsage
}

func newMetrics(node, backend, reason string) *metrics {
	m := &metrics{
		node: node,
		backendUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mlplane_gpu_backend_up",
			Help: "1 when the last read of the GPUs succeeded, 0 when it failed."}),
		backendInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mlplane_gpu_backend_info",
			Help: "Always 1; backend is what reads the GPUs (nvml, fake, none) and reason why it is none."}, []string{"backend", "reason"}),
		nvmlAvailable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mlplane_gpu_nvml_available",
			Help: "1 when NVML initialised, 0 when it did not (see mlplane_gpu_backend_info's reason)."}),
		backendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "mlplane_gpu_backend_errors_total",
			Help: "Reads of the GPUs that failed."}),
		apiWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mlplane_node_agent_api_writes_total",
			Help: "Writes to the API server by kind (node_annotation, node_status, lease) and result (success, error)."}, []string{"kind", "result"}),
		overBudgetEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mlplane_gpu_pod_over_budget_evictions_total",
			Help: "Evictions of pods over their GPU memory budget (--evict-over-budget), by result (evicted, refused)."}, []string{"result"}),
	}
	m.backendInfo.WithLabelValues(backend, reason).Set(1)
	if backend == "nvml" {
		m.nvmlAvailable.Set(1)
	}
	for _, k := range []string{writeAnnotation, writeStatus, writeLease} {
		m.apiWrites.WithLabelValues(k, "success")
		m.apiWrites.WithLabelValues(k, "error")
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m, m.backendUp, m.backendInfo, m.nvmlAvailable, m.backendErrors, m.apiWrites, m.overBudgetEvictions} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

func (m *metrics) write(kind string, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.apiWrites.WithLabelValues(kind, result).Inc()
}

func (m *metrics) observe(devs []Device, pods []podUsage) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devs, m.pods = devs, pods
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMemTotal, descMemUsed, descUtil, descHealthy, descPodMem, descPodBooked, descPodUtil, descPodOver, descDevices} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	const mi = 1 << 20
	ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(len(m.devs)), m.node)
	for _, d := range m.devs {
		gpu := strconv.Itoa(d.Index)
		ch <- prometheus.MustNewConstMetric(descMemTotal, prometheus.GaugeValue, float64(d.MemoryMiB*mi), m.node, gpu, d.UUID, d.Model)
		ch <- prometheus.MustNewConstMetric(descMemUsed, prometheus.GaugeValue, float64(d.UsedMiB*mi), m.node, gpu, d.UUID, d.Model)
		ch <- prometheus.MustNewConstMetric(descUtil, prometheus.GaugeValue, float64(d.UtilizationPercent)/100, m.node, gpu, d.UUID, d.Model)
		healthy := 0.0
		if d.Healthy {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, healthy, m.node, gpu, d.UUID, d.Model, d.Reason)
	}
	for _, p := range m.pods {
		gpu := strconv.Itoa(p.gpu)
		ch <- prometheus.MustNewConstMetric(descPodMem, prometheus.GaugeValue, float64(p.usedMiB*mi), m.node, p.namespace, p.name, p.uid, gpu, p.uuid)
		ch <- prometheus.MustNewConstMetric(descPodBooked, prometheus.GaugeValue, float64(p.bookedMiB*mi), m.node, p.namespace, p.name, p.uid, gpu, p.uuid)
		ch <- prometheus.MustNewConstMetric(descPodUtil, prometheus.GaugeValue, p.utilPercent/100, m.node, p.namespace, p.name, p.uid, gpu, p.uuid, p.utilSource)
		over := 0.0
		if p.overBudget {
			over = 1
		}
		ch <- prometheus.MustNewConstMetric(descPodOver, prometheus.GaugeValue, over, m.node, p.namespace, p.name, p.uid, gpu, p.uuid)
	}
}
