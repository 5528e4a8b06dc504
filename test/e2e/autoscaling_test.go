package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/custommetrics"
)

// rawMetrics reads a custom metrics API path with kubectl get --raw.
func rawMetrics(ctx context.Context, cfg *envconf.Config, path string) (*cmv1beta2.MetricValueList, error) {
	out, err := Kubectl(ctx, cfg, "", "get", "--raw", path)
	if err != nil {
		return nil, err
	}
	var list cmv1beta2.MetricValueList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", path, err, out)
	}
	return &list, nil
}

// values maps pod name to value.
func values(list *cmv1beta2.MetricValueList) map[string]string {
	out := map[string]string{}
	for _, it := range list.Items {
		out[it.DescribedObject.Name] = it.Value.String()
	}
	return out
}

func TestAutoscaling(t *testing.T) {
	const (
		app    = "infer"
		target = 50 // percent, the HPA's averageValue
	)
	f := features.New("autoscaling on GPU utilisation through the custom metrics API").
		Assess("kubectl get --raw shows the fake utilisation; a real HPA scales up when it rises and down when it falls", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.MetricsAPIServer)
			if !c.HasBin("node-agent") {
				t.Skip("bin/node-agent is not built")
			}
			cs := Clientset(t, cfg)
			node := AddAgentlessNode(ctx, t, c, "1x4x80Gi", "autoscale-")
			ns := CreateNamespace(ctx, t, cfg, "autoscale", nil)
			// Each pod of the Deployment runs one process on its GPU,
			// holding 12Gi and busy the test's current load.
			spec := filepath.Join(t.TempDir(), "gpus.yaml")
			load := cluster.NewFakeLoad(cluster.FakeLoadOptions{Path: spec, Node: node,
				Namespace: ns, Selector: "app=" + app, Used: resource.MustParse("12Gi"), Utilization: 37})
			if err := load.Sync(nil); err != nil {
				t.Fatal(err)
			}
			if err := c.StartNodeAgent(ctx, node, spec); err != nil {
				t.Fatal(err)
			}

			// An inference Deployment of GPU pods (as the webhook leaves
			// them), one GPU of 20Gi each, on the test's node.
			pod := onNode(gpuPodSpec(ns, "", app, 20, 1), node)
			replicas := int32(1)
			dep := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
				Spec: appsv1.DeploymentSpec{
					Replicas: &replicas,
					Selector: &metav1.LabelSelector{MatchLabels: pod.Labels},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels, Annotations: pod.Annotations}, Spec: pod.Spec},
				},
			}
			if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			followCtx, stopFollowing := context.WithCancel(ctx)
			var following sync.WaitGroup
			following.Add(1)
			go func() {
				defer following.Done()
				if err := load.Run(followCtx, cs); err != nil {
					t.Errorf("keeping the fake GPU spec in step: %v", err)
				}
			}()
			defer func() { stopFollowing(); following.Wait() }()
			first := WaitPods(ctx, t, cs, ns, "app="+app, 1, LongWait, PodRunning)[0]

			// The API serves what the fake spec drives: 37 percent, 12Gi
			// used, the 20Gi booked; for the pod by name and by selector.
			base := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/"
			want := map[string]map[string]string{
				custommetrics.MetricUtilization:  {first.Name: "37"},
				custommetrics.MetricMemoryUsed:   {first.Name: "12Gi"},
				custommetrics.MetricMemoryBooked: {first.Name: "20Gi"},
			}
			start := time.Now()
			var got map[string]map[string]string
			err := wait.For(func(ctx context.Context) (bool, error) {
				got = map[string]map[string]string{}
				for m := range want {
					list, err := rawMetrics(ctx, cfg, base+"*/"+m)
					if err != nil {
						return false, nil
					}
					got[m] = values(list)
				}
				return fmt.Sprint(got) == fmt.Sprint(want), nil
			}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(500*time.Millisecond))
			if err != nil {
				t.Fatalf("kubectl get --raw %s*/...: got %v, want %v", base, got, want)
			}
			t.Logf("the pod's figures reached the custom metrics API %s after it ran", time.Since(start).Round(time.Millisecond))
			one, err := rawMetrics(ctx, cfg, base+first.Name+"/"+custommetrics.MetricUtilization)
			if err != nil || len(one.Items) != 1 || one.Items[0].Value.String() != "37" || one.Items[0].Metric.Name != custommetrics.MetricUtilization {
				t.Fatalf("the pod by name: %+v, %v", one, err)
			}

			// A real HPA on the Pods metric, with no stabilisation window
			// down (default 5 minutes) so that the test need not wait.
			hpa := cluster.UtilizationHPA(ns, app, target, 1, 3)
			if _, err := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			scaledTo := func(n int32, why string) {
				t.Helper()
				start := time.Now()
				var last string
				err := wait.For(func(ctx context.Context) (bool, error) {
					h, err := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, app, metav1.GetOptions{})
					if err != nil {
						return false, nil
					}
					var current []string
					for _, m := range h.Status.CurrentMetrics {
						if m.Pods != nil {
							current = append(current, m.Pods.Current.AverageValue.String())
						}
					}
					last = fmt.Sprintf("desired %d, current %d, average %v, conditions %v", h.Status.DesiredReplicas, h.Status.CurrentReplicas, current, conditions(h))
					d, err := cs.AppsV1().Deployments(ns).Get(ctx, app, metav1.GetOptions{})
					return err == nil && *d.Spec.Replicas == n && d.Status.ReadyReplicas == n, nil
				}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(500*time.Millisecond))
				if err != nil {
					t.Fatalf("%s: the Deployment did not reach %d ready replicas: HPA %s", why, n, last)
				}
				t.Logf("%s: %d replicas after %s (HPA %s)", why, n, time.Since(start).Round(time.Millisecond), last)
			}
			// 37 < 50: one replica stays.
			load.SetUtilization(90)
			// 90 > 50: ceil(1 x 90/50) = 2, then ceil(2 x 90/50) = 4,
			// capped at maxReplicas 3.
			scaledTo(3, "utilisation 37 -> 90 percent")
			WaitPods(ctx, t, cs, ns, "app="+app, 3, ShortWait, func(p *corev1.Pod) bool { return PodRunning(p) && p.Spec.NodeName == node })
			// 10 < 50: ceil(3 x 10/50) = 1.
			load.SetUtilization(10)
			scaledTo(1, "utilisation 90 -> 10 percent")

			if err := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Delete(ctx, app, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := cs.AppsV1().Deployments(ns).Delete(ctx, app, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			WaitPods(ctx, t, cs, ns, "app="+app, 0, LongWait, nil) // before their node goes
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// conditions summarises an HPA's conditions for a failure message.
func conditions(h *autoscalingv2.HorizontalPodAutoscaler) []string {
	var out []string
	for _, c := range h.Status.Conditions {
		out = append(out, fmt.Sprintf("%s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return out
}
