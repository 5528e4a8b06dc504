package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
)

// TestLocalCluster checks what the other features stand on: fake GPU nodes
// that carry an inventory, the matching capacity and a fresh Lease, and a
// scheduler that honours that capacity.
func TestLocalCluster(t *testing.T) {
	f := features.New("local cluster").
		WithLabel("component", "cluster").
		Assess("GPU nodes publish inventory, capacity and a Lease", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			cs := Clientset(t, cfg)
			groups := c.Nodes()
			if len(groups) == 0 {
				t.Fatal("the local cluster has no GPU nodes")
			}
			for name, g := range groups {
				n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				gpus, err := api.DecodeInventory(n.Annotations[api.NodeAnnotationGPUs])
				if err != nil {
					t.Errorf("node %s: %v", name, err)
					continue
				}
				if len(gpus) != g.GPUs || gpus[0].MemoryMiB != g.MemoryMiB {
					t.Errorf("node %s: %d GPUs of %d MiB, want %s", name, len(gpus), gpus[0].MemoryMiB, g.GPUSpec())
				}
				alloc := n.Status.Allocatable[corev1.ResourceName(api.ResourceGPUMemory)]
				if alloc.Value() != api.HealthyMemoryMiB(gpus) {
					t.Errorf("node %s: allocatable %s = %s, want %d", name, api.ResourceGPUMemory, alloc.String(), api.HealthyMemoryMiB(gpus))
				}
				l, err := cs.CoordinationV1().Leases(api.LeaseNamespace).Get(ctx, api.LeaseName(name), metav1.GetOptions{})
				if err != nil {
					t.Errorf("node %s: Lease: %v", name, err)
					continue
				}
				if l.Spec.RenewTime == nil || time.Since(l.Spec.RenewTime.Time) > api.LeaseDuration {
					t.Errorf("node %s: Lease is stale: renewed %v", name, l.Spec.RenewTime)
				}
			}
			return ctx
		}).
		Assess("the default scheduler honours GPU memory", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			cs := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "capacity", nil)
			var largest int64
			for _, g := range c.Nodes() {
				largest = max(largest, int64(g.GPUs)*g.MemoryMiB)
			}
			pod := func(name string, mib int64) *corev1.Pod {
				q := *resource.NewQuantity(mib, resource.DecimalSI)
				return &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: testImage, Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{api.ResourceGPUMemory: q},
						Limits:   corev1.ResourceList{api.ResourceGPUMemory: q},
					}}}},
				}
			}
			for _, p := range []*corev1.Pod{pod("fits", largest), pod("too-big", largest+1)} {
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			WaitPods(ctx, t, cs, ns, "app=fits", 1, LongWait, PodRunning)
			var why string
			err := wait.For(func(ctx context.Context) (bool, error) {
				p, err := cs.CoreV1().Pods(ns).Get(ctx, "too-big", metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				if msg, ok := unschedulable(p); ok {
					why = msg
					return true, nil
				}
				if p.Spec.NodeName != "" {
					return false, fmt.Errorf("a pod larger than any node was bound to %s", p.Spec.NodeName)
				}
				return false, nil
			}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(why, "Insufficient "+api.ResourceGPUMemory) {
				t.Errorf("unschedulable for another reason: %s", why)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
