package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
)

// reportInterval is the node agent's default --report-interval: the longest
// a meaningful change may take to reach the Node.
const reportInterval = 30 * time.Second

// nodeGPUs reads what the agent published on a node.
func nodeGPUs(ctx context.Context, cs kubernetes.Interface, name string) (inv []api.GPU, allocatable, capacity int64, err error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, 0, 0, err
	}
	inv, err = api.DecodeInventory(n.Annotations[api.NodeAnnotationGPUs])
	a, c := n.Status.Allocatable[corev1.ResourceName(api.ResourceGPUMemory)], n.Status.Capacity[corev1.ResourceName(api.ResourceGPUMemory)]
	return inv, a.Value(), c.Value(), err
}

func getLease(ctx context.Context, cs kubernetes.Interface, node string) (*coordinationv1.Lease, error) {
	return cs.CoordinationV1().Leases(api.LeaseNamespace).Get(ctx, api.LeaseName(node), metav1.GetOptions{})
}

func leaseExpired(l *coordinationv1.Lease, now time.Time) bool {
	return l.Spec.RenewTime == nil || now.Sub(l.Spec.RenewTime.Time) > api.LeaseDuration
}

func TestNodeAgent(t *testing.T) {
	publishes := features.New("node agent publishes every fake node").
		Assess("annotation, capacity and a renewed Lease on each node with an agent", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			cs := Clientset(t, cfg)
			checked := 0
			renewed := map[string]time.Time{}
			for name, group := range c.Nodes() {
				if !c.Running(cluster.NodeAgent(name)) {
					continue // published in-process, or a test's own node
				}
				checked++
				want := cluster.FakeGPUs(name, group)
				inv, alloc, capacity, err := nodeGPUs(ctx, cs, name)
				if err != nil {
					t.Fatalf("node %s: %v", name, err)
				}
				if diff := cmp.Diff(want, inv); diff != "" {
					t.Errorf("node %s: %s (-want +got):\n%s", name, api.NodeAnnotationGPUs, diff)
				}
				if sum := api.HealthyMemoryMiB(want); alloc != sum || capacity != sum {
					t.Errorf("node %s: %s capacity %d allocatable %d, want %d", name, api.ResourceGPUMemory, capacity, alloc, sum)
				}
				l, err := getLease(ctx, cs, name)
				if err != nil {
					t.Fatalf("node %s: Lease: %v", name, err)
				}
				if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != name || leaseExpired(l, time.Now()) {
					t.Errorf("node %s: Lease holder %v renewed %v: want held by the node and fresh", name, l.Spec.HolderIdentity, l.Spec.RenewTime)
				}
				renewed[name] = l.Spec.RenewTime.Time
			}
			if checked == 0 {
				t.Skip("no node runs bin/node-agent (" + EnvPublisher + "=inprocess, or bin/node-agent not built)")
			}
			// Every Lease keeps being renewed.
			if err := wait.For(func(ctx context.Context) (bool, error) {
				for name, first := range renewed {
					l, err := getLease(ctx, cs, name)
					if err != nil || !l.Spec.RenewTime.After(first) {
						return false, nil
					}
				}
				return true, nil
			}, wait.WithContext(ctx), wait.WithTimeout(3*api.LeaseRenewInterval), wait.WithInterval(time.Second)); err != nil {
				t.Errorf("Leases not all renewed within %s: %v", 3*api.LeaseRenewInterval, err)
			}
			return ctx
		}).Feature()

	faults := features.New("node agent follows GPU health and dies visibly").
		Assess("an unhealthy GPU lowers capacity within one report interval; a stopped agent's Lease expires", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			if !c.HasBin("node-agent") {
				t.Skip("bin/node-agent is not built")
			}
			cs := Clientset(t, cfg)
			node := AddAgentlessNode(ctx, t, c, "1x4x40Gi", "agent-e2e-")

			spec := filepath.Join(t.TempDir(), "gpus.yaml")
			writeSpec := func(unhealthy int) {
				t.Helper()
				var b []byte
				for i := range 4 {
					b = fmt.Appendf(b, "- memory: 40Gi\n  healthy: %v\n", i != unhealthy)
				}
				b = append([]byte("gpus:\n"), b...)
				if err := cluster.WriteFakeSpec(spec, b); err != nil {
					t.Fatal(err)
				}
			}
			writeSpec(-1)
			if err := c.StartNodeAgent(ctx, node, spec); err != nil {
				t.Fatal(err)
			}
			waitCapacity := func(want int64, timeout time.Duration) {
				t.Helper()
				var last int64
				if err := wait.For(func(ctx context.Context) (bool, error) {
					_, alloc, _, err := nodeGPUs(ctx, cs, node)
					last = alloc
					return err == nil && alloc == want, nil
				}, wait.WithContext(ctx), wait.WithTimeout(timeout), wait.WithInterval(250*time.Millisecond)); err != nil {
					t.Fatalf("node %s: allocatable %s = %d, want %d within %s", node, api.ResourceGPUMemory, last, want, timeout)
				}
			}
			waitCapacity(4*40960, ShortWait)

			writeSpec(1)
			start := time.Now()
			waitCapacity(3*40960, reportInterval) // 3 healthy * 40960
			t.Logf("capacity lowered %s after GPU 1 turned unhealthy", time.Since(start).Round(time.Millisecond))
			inv, _, _, err := nodeGPUs(ctx, cs, node)
			if err != nil || len(inv) != 4 || inv[1].Healthy || !inv[0].Healthy {
				t.Errorf("inventory after the fault = %+v, %v: want GPU 1 alone unhealthy", inv, err)
			}

			l, err := getLease(ctx, cs, node)
			if err != nil || leaseExpired(l, time.Now()) {
				t.Fatalf("Lease before stopping the agent: %v, %v", l, err)
			}
			if err := c.StopComponent(cluster.NodeAgent(node)); err != nil {
				t.Fatal(err)
			}
			l, err = getLease(ctx, cs, node)
			if err != nil {
				t.Fatal(err)
			}
			lastRenew := l.Spec.RenewTime.Time
			if err := wait.For(func(ctx context.Context) (bool, error) {
				l, err := getLease(ctx, cs, node)
				return err == nil && leaseExpired(l, time.Now()), nil
			}, wait.WithContext(ctx), wait.WithTimeout(api.LeaseDuration+ShortWait), wait.WithInterval(time.Second)); err != nil {
				t.Fatalf("Lease of the stopped agent did not expire: %v", err)
			}
			if l, err := getLease(ctx, cs, node); err != nil || !l.Spec.RenewTime.Time.Equal(lastRenew) {
				t.Errorf("Lease renewed after the agent stopped: %v (was %v), %v", l.Spec.RenewTime, lastRenew, err)
			}
			return ctx
		}).Feature()

	testenv.Test(t, publishes, faults)
}
