package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
)

// waitEvent waits for an event on pod ns/name with reason, whose message
// contains want, and returns its message.
func waitEvent(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, reason, want string) string {
	t.Helper()
	var seen []string
	var msg string
	err := wait.For(func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, e := range list.Items {
			if e.InvolvedObject.Name != name {
				continue
			}
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == reason && strings.Contains(e.Message, want) {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
	if err != nil {
		t.Fatalf("no %s event on %s/%s containing %q (seen: %q)", reason, ns, name, want, seen)
	}
	return msg
}

// TestOverBudget: a pod whose processes use more GPU memory than it booked
// (the fake backend's simulated process) is reported by a Warning event and
// a metric, keeps new pods out of the memory it holds beyond its booking,
// and, with eviction on and its namespace opted in, is evicted through the
// Eviction API, a PodDisruptionBudget holding it back until it is removed
// (issue 17 part 2).
func TestOverBudget(t *testing.T) {
	f := features.New("a pod over its GPU memory budget").
		Assess("event, metric, accounting, eviction behind a PDB", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			if !c.HasBin("node-agent") {
				t.Fatal("bin/node-agent is not built")
			}
			cs := Clientset(t, cfg)
			node := AddAgentlessNode(ctx, t, c, "1x1x80Gi", "overbudget-")
			spec := filepath.Join(t.TempDir(), "gpus.yaml")
			writeSpec := func(podUID string, usedGi int) {
				t.Helper()
				b := []byte("gpus:\n- memory: 80Gi\n")
				if podUID != "" {
					b = fmt.Appendf(b, "  processes:\n  - pid: 4242\n    podUID: %s\n    used: %dGi\n    utilization: 40\n", podUID, usedGi)
				}
				if err := cluster.WriteFakeSpec(spec, b); err != nil {
					t.Fatal(err)
				}
			}
			writeSpec("", 0)
			if err := c.StartNodeAgent(ctx, node, spec, "--evict-over-budget", "--over-budget-after=2s", "--report-interval=3s"); err != nil {
				t.Fatal(err)
			}
			ns := CreateNamespace(ctx, t, cfg, "overbudget", nil)
			t.Cleanup(func() {
				zero := int64(0)
				_ = cs.CoreV1().Pods(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
				WaitPods(context.Background(), t, cs, ns, "", 0, LongWait, nil)
			})

			// a books 20 GiB and its process uses 24 GiB: 4 GiB over.
			a := placeGPUPod(ctx, t, cs, ns, "a", "", 20, node)
			pdb := &policyv1.PodDisruptionBudget{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a"},
				Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: new(intstr.FromInt32(1)),
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}},
			}
			if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			writeSpec(string(a.UID), 24)

			// Accounting: the inventory carries the 4 GiB at once, and a
			// 58 GiB pod no longer fits (60 would be free by bookings).
			err := wait.For(func(ctx context.Context) (bool, error) {
				n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
				if err != nil {
					return false, nil
				}
				inv, err := api.DecodeInventory(n.Annotations[api.NodeAnnotationGPUs])
				return err == nil && len(inv) == 1 && inv[0].OverBookedMiB == 4096, nil
			}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
			if err != nil {
				t.Fatalf("node %s: overBookedMiB never 4096: %v", node, err)
			}
			b := onNode(gpuPodSpec(ns, "b", "b", 58, 1), node)
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, b, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitUnschedulable(ctx, t, cs, ns, "b", "largest free GPU has 57344 MiB, pod needs 59392 MiB per GPU on 1 GPU")

			// The Warning and the metric, after --over-budget-after.
			msg := waitEvent(ctx, t, cs, ns, "a", api.EventReasonOverBudget, "pod uses 24576 MiB of GPU memory on ")
			if !strings.Contains(msg, "more than the 20480 MiB it booked (tolerance 512 MiB)") {
				t.Errorf("event: %q", msg)
			}
			metrics := scrape(ctx, t, c.NodeAgentMetricsURL(node))
			if !strings.Contains(metrics, `mlplane_gpu_pod_over_budget{gpu="0",namespace="`+ns+`",node="`+node+`",pod="a"`) ||
				!strings.Contains(metrics, `mlplane_gpu_pod_utilization_ratio{gpu="0",namespace="`+ns+`",node="`+node+`",pod="a",pod_uid="`+string(a.UID)+`",source="process"`) {
				t.Errorf("agent metrics lack a's over-budget and utilisation series:\n%s", grepLines(metrics, "mlplane_gpu_pod_"))
			}
			for _, line := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(line, "mlplane_gpu_pod_over_budget{") && strings.Contains(line, `pod="a"`) && !strings.HasSuffix(line, " 1") {
					t.Errorf("metric: %s, want 1", line)
				}
			}

			// Not opted in: no eviction. Opted in: the PDB refuses it.
			nsObj, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if nsObj.Labels == nil {
				nsObj.Labels = map[string]string{}
			}
			nsObj.Labels[api.LabelEvictOverBudget] = "true"
			if _, err := cs.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitEvent(ctx, t, cs, ns, "a", api.EventReasonOverBudgetEvictionRefused, "disruption budget")
			if p, err := cs.CoreV1().Pods(ns).Get(ctx, "a", metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
				t.Fatalf("a evicted despite its PDB: %v %v", err, p.DeletionTimestamp)
			}
			// Without the PDB it goes, and b gets its GPU.
			if err := cs.PolicyV1().PodDisruptionBudgets(ns).Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitEvent(ctx, t, cs, ns, "a", api.EventReasonOverBudgetEvicted, "evicted by the mlplane node agent")
			waitGone(ctx, t, cs, ns, "a")
			writeSpec("", 0)
			p := waitBound(ctx, t, cs, ns, "b")
			if p.Spec.NodeName != node {
				t.Fatalf("b on %s", p.Spec.NodeName)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// scrape GETs a /metrics URL.
func scrape(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// grepLines keeps the lines of s that start with prefix.
func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
