package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/score/extender"
)

// Priority classes of the preemption tests.
var preemptPriorities = map[string]int32{"e2e-preempt-low": 100, "e2e-preempt-mid": 200, "e2e-preempt-high": 1000}

// createPriorityClasses creates preemptPriorities, deleted when t ends.
func createPriorityClasses(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	for name, v := range preemptPriorities {
		_, err := cs.SchedulingV1().PriorityClasses().Create(ctx, &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: v}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cs.SchedulingV1().PriorityClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
}

// placeGPUPod creates a GPU pod of memGi GiB in priority class class on
// node, waits until it is bound and returns it.
func placeGPUPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, class string, memGi int64, node string) *corev1.Pod {
	t.Helper()
	p := onNode(gpuPodSpec(ns, name, name, memGi, 1), node)
	p.Spec.PriorityClassName = class
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitBound(ctx, t, cs, ns, name)
}

// waitGone waits until pod ns/name no longer exists.
func waitGone(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	err := wait.For(func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
	if err != nil {
		t.Fatalf("pod %s/%s still exists: %v", ns, name, err)
	}
}

// remaining lists the names of the pods left in ns, sorted.
func remaining(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) []string {
	t.Helper()
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

// TestPreemption: a pod of higher priority gets the GPU memory it needs by
// preempting pods of lower priority, on the real scheduler, for both ways a
// node can be short (issue 16 item 1):
//
//   - fragmented: the node's total still fits, so kube-scheduler finds no
//     victim ("expected at least one victim pod") and gives up; the
//     extender evicts one pod, the one without a PodDisruptionBudget.
//   - full: kube-scheduler, by the node's total, would evict the two 30 GiB
//     pods on different GPUs and the 60 GiB pod would still not fit; the
//     preempt verb names both pods of one GPU instead.
func TestPreemption(t *testing.T) {
	setup := func(ctx context.Context, t *testing.T, cfg *envconf.Config, prefix string) (kubernetes.Interface, string, string) {
		c := RequireLocal(ctx, t)
		RequireComponent(ctx, t, cluster.Extender)
		cs := Clientset(t, cfg)
		createPriorityClasses(ctx, t, cs)
		nodes, err := c.AddGPUNodes(ctx, "1x2x80Gi", cluster.NodeOptions{Prefix: prefix, Publisher: cluster.PublishInProcess})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.RemoveNode(context.Background(), nodes[0]); err != nil {
				t.Error(err)
			}
		})
		ns := CreateNamespace(ctx, t, cfg, prefix, nil)
		t.Cleanup(func() {
			// Gone before the node is, so that no later test sees pods
			// holding GPUs of a node that no longer exists.
			zero := int64(0)
			ctx := context.Background()
			if err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}); err != nil {
				t.Error(err)
			}
			WaitPods(ctx, t, cs, ns, "", 0, LongWait, nil)
		})
		return cs, ns, nodes[0]
	}
	fragmented := features.New("preemption: the node's total fits, no GPU has room").
		Assess("the extender evicts the pod without a PDB", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs, ns, node := setup(ctx, t, cfg, "preempt-frag-")
			a := placeGPUPod(ctx, t, cs, ns, "a", "e2e-preempt-low", 50, node)
			b := placeGPUPod(ctx, t, cs, ns, "b", "e2e-preempt-low", 50, node)
			if a.Annotations[api.AnnotationGPUIDs] == b.Annotations[api.AnnotationGPUIDs] {
				t.Fatalf("a and b share GPU %s", a.Annotations[api.AnnotationGPUIDs])
			}
			pdb := &policyv1.PodDisruptionBudget{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a"},
				Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: new(intstr.FromInt32(1)),
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}},
			}
			if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			// The disruption controller must have counted a before the
			// extender can tell that evicting it would break the budget.
			err := wait.For(func(ctx context.Context) (bool, error) {
				p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "a", metav1.GetOptions{})
				return err == nil && p.Status.ObservedGeneration == p.Generation && p.Status.ExpectedPods == 1, nil
			}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
			if err != nil {
				t.Fatalf("PDB status: %v", err)
			}

			start := time.Now()
			p := placeGPUPod(ctx, t, cs, ns, "p", "e2e-preempt-high", 60, node)
			t.Logf("60 GiB pod of higher priority bound after %s", time.Since(start).Round(10*time.Millisecond))
			if got, want := p.Annotations[api.AnnotationGPUIDs], b.Annotations[api.AnnotationGPUIDs]; got != want {
				t.Errorf("p on GPU %s, want b's %s", got, want)
			}
			waitGone(ctx, t, cs, ns, "b")
			if got := remaining(ctx, t, cs, ns); !slices.Equal(got, []string{"a", "p"}) {
				t.Errorf("pods left: %v, want [a p]", got)
			}
			checkPreemptingEvent(ctx, t, cs, ns, "p", "evicting "+ns+"/b on node "+node)
			checkNoOversubscription(ctx, t, cs)
			return ctx
		}).Feature()
	full := features.New("preemption: the node is full, the scheduler's victims would free the wrong GPUs").
		Assess("the preempt verb names both pods of one GPU", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs, ns, node := setup(ctx, t, cfg, "preempt-full-")
			// The 50 GiB pods fill one GPU each; a 30 GiB pod joins each.
			gpuOf := map[string]string{}
			for _, s := range []struct {
				name, class string
				gi          int64
			}{{"d", "e2e-preempt-mid", 50}, {"f", "e2e-preempt-mid", 50}, {"c", "e2e-preempt-low", 30}, {"e", "e2e-preempt-low", 30}} {
				gpuOf[s.name] = placeGPUPod(ctx, t, cs, ns, s.name, s.class, s.gi, node).Annotations[api.AnnotationGPUIDs]
			}
			if gpuOf["d"] == gpuOf["f"] || gpuOf["c"] == gpuOf["e"] {
				t.Fatalf("placement %v: want one 50 and one 30 GiB pod per GPU", gpuOf)
			}
			start := time.Now()
			p := placeGPUPod(ctx, t, cs, ns, "p", "e2e-preempt-high", 60, node)
			t.Logf("60 GiB pod of higher priority bound after %s", time.Since(start).Round(10*time.Millisecond))
			gpu := p.Annotations[api.AnnotationGPUIDs]
			var evicted, kept []string
			for name, g := range gpuOf {
				if g == gpu {
					evicted = append(evicted, name)
				} else {
					kept = append(kept, name)
				}
			}
			for _, name := range evicted {
				waitGone(ctx, t, cs, ns, name)
			}
			want := append(slices.Clone(kept), "p")
			slices.Sort(want)
			if got := remaining(ctx, t, cs, ns); len(evicted) != 2 || !slices.Equal(got, want) {
				t.Errorf("pods left: %v, want %v (both pods of p's GPU %s gone, the other GPU's kept)", got, want, gpu)
			}
			checkNoOversubscription(ctx, t, cs)
			return ctx
		}).Feature()
	testenv.Test(t, fragmented, full)
}

// checkPreemptingEvent waits for the extender's Preempting event on pod
// ns/name whose note contains want.
func checkPreemptingEvent(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, want string) {
	t.Helper()
	var notes []string
	err := wait.For(func(ctx context.Context) (bool, error) {
		list, err := cs.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		notes = notes[:0]
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == extender.ReasonPreempting {
				notes = append(notes, e.Note)
				if strings.Contains(e.Note, want) {
					return true, nil
				}
			}
		}
		return false, nil
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(250*time.Millisecond))
	if err != nil {
		t.Fatalf("no %s event on %s/%s containing %q (seen: %s)", extender.ReasonPreempting, ns, name, want, fmt.Sprint(notes))
	}
}
