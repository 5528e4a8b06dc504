package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/custommetrics"
)

// The autoscaling scene (demo up --autoscale, make demo-autoscale).
const (
	autoscaleNamespace = "ml-autoscale"
	autoscaleApp       = "llm"
	// autoscaleTarget is the HPA's averageValue of gpu_utilization, percent.
	autoscaleTarget = 50
	autoscaleMax    = 4
)

// autoscale shows a HorizontalPodAutoscaler scaling an inference
// Deployment on GPU utilisation through the custom metrics API: a node of
// 4 GPUs whose node agent reads a fake spec that this process keeps in
// step with the Deployment's pods (cluster.FakeLoad), a Deployment of GPU
// pods and an HPA on gpu_utilization; the load goes 20 -> 90 -> 20
// percent while a table shows the replicas, the HPA's average and each
// pod's figure as the API serves it.
func autoscale(ctx context.Context, w io.Writer, c *cluster.Cluster, logf func(string, ...any)) error {
	if !c.Running(cluster.MetricsAPIServer) {
		return fmt.Errorf("--autoscale needs the custom metrics API server (cmd/metrics-apiserver did not build)")
	}
	cs := c.Client()
	nodes, err := c.AddGPUNodes(ctx, "1x4x80Gi", cluster.NodeOptions{Prefix: "autoscale-", Publisher: cluster.PublishNone})
	if err != nil {
		return err
	}
	node := nodes[0]
	spec := filepath.Join(c.Dir(), "autoscale-gpus.yaml")
	load := cluster.NewFakeLoad(cluster.FakeLoadOptions{Path: spec, Node: node, Namespace: autoscaleNamespace,
		Selector: "app=" + autoscaleApp, Used: resource.MustParse("12Gi"), Utilization: 20})
	if err := load.Sync(nil); err != nil {
		return err
	}
	if err := c.StartNodeAgent(ctx, node, spec); err != nil {
		return err
	}
	if err := createAutoscaled(ctx, cs, node); err != nil {
		return err
	}
	logf("autoscale: node %s (4 GPUs of 80Gi), its node agent reading %s", node, spec)
	logf("autoscale: Deployment %s/%s (a GPU of 20Gi a pod) and an HPA on %s: averageValue %d, 1 to %d replicas",
		autoscaleNamespace, autoscaleApp, custommetrics.MetricUtilization, autoscaleTarget, autoscaleMax)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	loadErr := make(chan error, 1)
	go func() { loadErr <- load.Run(runCtx, cs) }()

	start := time.Now()
	fmt.Fprintf(w, "\n%7s  %5s  %8s  %11s  %s\n", "time", "load", "replicas", "HPA average", "gpu_utilization per pod (custom.metrics.k8s.io)")
	last := ""
	// phase sets the load and prints rows until until holds, and for hold
	// after, so that the table shows the new state settled.
	phase := func(util int, until func(replicas int32) bool, hold, timeout time.Duration) error {
		load.SetUtilization(util)
		deadline := time.Now().Add(timeout)
		var reached time.Time
		for {
			row, replicas, err := autoscaleRow(ctx, c, util)
			if err != nil {
				return err
			}
			if row != last {
				fmt.Fprintf(w, "%6.0fs  %s\n", time.Since(start).Seconds(), row)
				last = row
			}
			if reached.IsZero() && until(replicas) {
				reached = time.Now()
			}
			if !reached.IsZero() && time.Since(reached) >= hold {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("autoscale: load %d%%: no scale within %s (kubectl describe hpa -n %s %s)", util, timeout, autoscaleNamespace, autoscaleApp)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-loadErr:
				return err
			case <-time.After(time.Second):
			}
		}
	}
	settle := 5 * time.Second
	// 20 < 50: one replica.
	if err := phase(20, func(r int32) bool { return r == 1 }, settle, 2*time.Minute); err != nil {
		return err
	}
	// 90 > 50: ceil(1 x 90/50) = 2, then 4 (the maximum).
	if err := phase(90, func(r int32) bool { return r == autoscaleMax }, settle, 3*time.Minute); err != nil {
		return err
	}
	// 20 < 50: ceil(4 x 20/50) = 2, then 1.
	if err := phase(20, func(r int32) bool { return r == 1 }, 0, 3*time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nThe HPA scaled %s/%s 1 -> %d -> 1 on GPU utilisation in %s. To look again:\n", autoscaleNamespace, autoscaleApp, autoscaleMax, time.Since(start).Round(time.Second))
	fmt.Fprintf(w, "  kubectl get --raw /apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s\n", autoscaleNamespace, custommetrics.MetricUtilization)
	fmt.Fprintf(w, "  kubectl describe hpa -n %s %s\n", autoscaleNamespace, autoscaleApp)
	fmt.Fprintf(w, "(the load is driven by this process and stays at 20%% when it exits; docs/autoscaling.md)\n")
	return nil
}

// createAutoscaled creates the namespace, the Deployment of GPU pods (as
// the webhook leaves them) pinned to node, and its HPA.
func createAutoscaled(ctx context.Context, cs kubernetes.Interface, node string) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: autoscaleNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	labels := map[string]string{"app": autoscaleApp}
	mem := resource.MustParse("20Gi")
	total := *resource.NewQuantity(mem.Value()/(1<<20), resource.DecimalSI) // MiB, one GPU
	zero := int64(0)
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: autoscaleNamespace, Name: autoscaleApp},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{api.AnnotationGPUMemory: "20Gi", api.AnnotationGPUCount: "1"}},
				Spec: corev1.PodSpec{
					SchedulerName: api.DefaultSchedulerName,
					NodeSelector:  map[string]string{corev1.LabelHostname: node},
					Containers: []corev1.Container{{Name: "server", Image: "registry.example/vllm:demo",
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{api.ResourceGPUMemory: total},
							Limits:   corev1.ResourceList{api.ResourceGPUMemory: total},
						}}},
					TerminationGracePeriodSeconds: &zero,
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(autoscaleNamespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return err
	}
	hpa := cluster.UtilizationHPA(autoscaleNamespace, autoscaleApp, autoscaleTarget, 1, autoscaleMax)
	_, err := cs.AutoscalingV2().HorizontalPodAutoscalers(autoscaleNamespace).Create(ctx, hpa, metav1.CreateOptions{})
	return err
}

// autoscaleRow is one line of the table: the load, the Deployment's ready
// and wanted replicas, the HPA's current average and each pod's
// gpu_utilization read from the custom metrics API as the HPA reads it.
func autoscaleRow(ctx context.Context, c *cluster.Cluster, util int) (string, int32, error) {
	cs := c.Client()
	d, err := cs.AppsV1().Deployments(autoscaleNamespace).Get(ctx, autoscaleApp, metav1.GetOptions{})
	if err != nil {
		return "", 0, err
	}
	h, err := cs.AutoscalingV2().HorizontalPodAutoscalers(autoscaleNamespace).Get(ctx, autoscaleApp, metav1.GetOptions{})
	if err != nil {
		return "", 0, err
	}
	average := "-"
	for _, m := range h.Status.CurrentMetrics {
		if m.Pods != nil && m.Pods.Current.AverageValue != nil {
			average = m.Pods.Current.AverageValue.String()
		}
	}
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s", autoscaleNamespace, custommetrics.MetricUtilization)
	var pods []string
	if b, err := cs.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx); err == nil {
		var list cmv1beta2.MetricValueList
		if err := json.Unmarshal(b, &list); err == nil {
			for _, it := range list.Items {
				name := it.DescribedObject.Name
				pods = append(pods, name[strings.LastIndexByte(name, '-')+1:]+"="+it.Value.String())
			}
		}
	}
	sort.Strings(pods)
	want := int32(0)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	replicas := fmt.Sprintf("%d", d.Status.ReadyReplicas)
	if want != d.Status.ReadyReplicas {
		replicas = fmt.Sprintf("%d->%d", d.Status.ReadyReplicas, want)
	}
	return fmt.Sprintf("%4d%%  %8s  %11s  %s", util, replicas, average, strings.Join(pods, " ")), d.Status.ReadyReplicas, nil
}
