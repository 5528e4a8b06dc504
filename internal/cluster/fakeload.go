package cluster

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/custommetrics"
	"github.com/mlplane/mlplane/internal/gpu"
)

// FakeLoadOptions configures NewFakeLoad.
type FakeLoadOptions struct {
	// Path is the node agent's YAML fake spec (StartNodeAgent(node, Path)).
	// Required.
	Path string
	// Node is the agent's node: only pods on it get processes. Required.
	Node string
	// Namespace and Selector (a label selector) choose the workload's
	// pods. Required.
	Namespace, Selector string
	// GPUs is how many GPUs the node has. Default 4.
	GPUs int
	// GPUMemory is each GPU's memory. Default 80Gi.
	GPUMemory resource.Quantity
	// Used is the GPU memory each pod's process holds. Default 12Gi.
	Used resource.Quantity
	// Utilization is the initial busy percentage of each pod's process,
	// 0..100 (SetUtilization changes it).
	Utilization int
}

// FakeLoad keeps a node agent's fake GPU spec in step with a workload, so
// that a test or the demo drives GPU utilisation: every Running pod of the
// workload on the node runs one process on its GPU (the one its gpu-ids
// annotation names, else one by the pods' order), holding Used and busy
// the current utilisation. The agent re-reads the file at every poll; it
// is replaced by a rename, never seen half written.
type FakeLoad struct {
	opts FakeLoadOptions
	util atomic.Int64

	mu   sync.Mutex
	last []byte
}

// NewFakeLoad applies the defaults of opts. It panics without Path, Node,
// Namespace or Selector: a programming error.
func NewFakeLoad(opts FakeLoadOptions) *FakeLoad {
	if opts.Path == "" || opts.Node == "" || opts.Namespace == "" || opts.Selector == "" {
		panic("cluster: FakeLoadOptions needs Path, Node, Namespace and Selector")
	}
	if opts.GPUs <= 0 {
		opts.GPUs = 4
	}
	if opts.GPUMemory.IsZero() {
		opts.GPUMemory = resource.MustParse("80Gi")
	}
	if opts.Used.IsZero() {
		opts.Used = resource.MustParse("12Gi")
	}
	l := &FakeLoad{opts: opts}
	l.util.Store(int64(opts.Utilization))
	return l
}

// SetUtilization sets the busy percentage (0..100) of every pod's process,
// written at the next Sync.
func (l *FakeLoad) SetUtilization(percent int) { l.util.Store(int64(percent)) }

// Utilization is the current busy percentage.
func (l *FakeLoad) Utilization() int { return int(l.util.Load()) }

// Spec is the fake spec for pods (those of the workload on the node).
func (l *FakeLoad) Spec(pods []corev1.Pod) gpu.FakeSpec {
	spec := gpu.FakeSpec{GPUs: make([]gpu.FakeGPUSpec, l.opts.GPUs)}
	for i := range spec.GPUs {
		spec.GPUs[i].Memory = l.opts.GPUMemory
	}
	pods = append([]corev1.Pod(nil), pods...)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for i, p := range pods {
		g := i % l.opts.GPUs
		for j := range l.opts.GPUs {
			if p.Annotations[api.AnnotationGPUIDs] == FakeUUID(l.opts.Node, j) {
				g = j
			}
		}
		spec.GPUs[g].Processes = append(spec.GPUs[g].Processes, gpu.FakeProcessSpec{
			PID: uint32(1000 + i), PodUID: string(p.UID), Used: l.opts.Used, Utilization: l.Utilization(),
		})
	}
	return spec
}

// Sync writes the spec for pods when it differs from the last one written.
func (l *FakeLoad) Sync(pods []corev1.Pod) error {
	b, err := yaml.Marshal(l.Spec(pods))
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if bytes.Equal(b, l.last) {
		return nil
	}
	if err := WriteFakeSpec(l.opts.Path, b); err != nil {
		return fmt.Errorf("fake GPU spec %s: %w", l.opts.Path, err)
	}
	l.last = b
	return nil
}

// Run syncs the spec with the workload's Running pods on the node every
// 250ms until ctx ends, and returns the first write error (a failed list
// is retried).
func (l *FakeLoad) Run(ctx context.Context, client kubernetes.Interface) error {
	for {
		list, err := client.CoreV1().Pods(l.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: l.opts.Selector})
		if err == nil {
			var running []corev1.Pod
			for _, p := range list.Items {
				if p.Spec.NodeName == l.opts.Node && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
					running = append(running, p)
				}
			}
			if err := l.Sync(running); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// UtilizationHPA is an autoscaling/v2 HorizontalPodAutoscaler of Deployment
// name in namespace on the custom metric gpu_utilization (type Pods,
// averageValue targetPercent), from minReplicas to maxReplicas, with no
// scale-down stabilisation window (the default is 5 minutes), so that a
// test or the demo sees the scale-down at once.
func UtilizationHPA(namespace, name string, targetPercent int64, minReplicas, maxReplicas int32) *autoscalingv2.HorizontalPodAutoscaler {
	window := int32(0)
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			MinReplicas:    &minReplicas,
			MaxReplicas:    maxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: custommetrics.MetricUtilization},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resource.NewQuantity(targetPercent, resource.DecimalSI)},
				},
			}},
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: &window}},
		},
	}
}
