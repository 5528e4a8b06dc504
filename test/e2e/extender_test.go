package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/score"
)

// The extender features run on ~50 extra KWOK nodes of three GPU sizes.
const (
	extenderNodes  = "20x8x80Gi,20x4x40Gi,10x8x48Gi"
	extenderPrefix = "ext-node-"
	burstPods      = 1000
	// killAfter is how many pods of the burst are bound when the extender
	// is killed.
	killAfter = 300
	haPods    = 200
	haKill    = 60
)

// burstSizes cycles through per-GPU memory (GiB) and GPU count: small and
// mid-size models and a few two-GPU pods, about 16 GiB a pod on average,
// three quarters of the cluster's GPU memory for the burst.
var burstSizes = []struct {
	gi    int64
	count int
}{{4, 1}, {8, 1}, {16, 1}, {20, 1}, {12, 1}, {16, 1}, {8, 1}, {40, 1}, {16, 2}, {6, 1}, {10, 1}, {20, 1}}

// gpuPodSpec is a pod as the webhook leaves it: the GPU annotations, the
// extended resource for the whole amount, and the mlplane scheduler.
func gpuPodSpec(ns, name, app string, memGi int64, count int) *corev1.Pod {
	total := resource.NewQuantity(memGi*1024*int64(count), resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app},
			Annotations: map[string]string{api.AnnotationGPUMemory: fmt.Sprintf("%dGi", memGi), api.AnnotationGPUCount: fmt.Sprint(count)}},
		Spec: corev1.PodSpec{
			SchedulerName: api.DefaultSchedulerName,
			Containers: []corev1.Container{{Name: "server", Image: "registry.example/vllm:fake",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{api.ResourceGPUMemory: *total}, Limits: corev1.ResourceList{api.ResourceGPUMemory: *total}}}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

// createPods creates n pods from 32 goroutines, as a burst.
func createPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, app string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := atomic.Int64{}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				s := burstSizes[i%len(burstSizes)]
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, gpuPodSpec(ns, fmt.Sprintf("%s-%04d", app, i), app, s.gi, s.count), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("creating pods: %v", err)
	}
}

// countBound counts the pods of app in ns that have a node.
func countBound(ctx context.Context, cs kubernetes.Interface, ns, app string) (int, error) {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range list.Items {
		if p.Spec.NodeName != "" {
			n++
		}
	}
	return n, nil
}

// whenBound runs fn once at least n pods of app are bound, in the
// background; the returned function waits for it and reports how many were
// bound at that moment.
func whenBound(ctx context.Context, cs kubernetes.Interface, ns, app string, n int, fn func() error) func() (int, error) {
	var at int
	var ferr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		ferr = wait.For(func(ctx context.Context) (bool, error) {
			b, err := countBound(ctx, cs, ns, app)
			at = b
			return err == nil && b >= n, nil
		}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(100*time.Millisecond))
		if ferr == nil {
			ferr = fn()
		}
	}()
	return func() (int, error) { <-done; return at, ferr }
}

// checkNoOversubscription reads every node's inventory and every pod's
// assignment from the API server and fails the test for a GPU holding more
// than its memory, a pod holding GPUs of another node, or a bound GPU pod
// without its assignment.
func checkNoOversubscription(ctx context.Context, t *testing.T, cs kubernetes.Interface) (gpusUsed int) {
	t.Helper()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	capacity := map[string]int64{}
	owner := map[string]string{}
	for _, n := range nodes.Items {
		inv, err := api.DecodeInventory(n.Annotations[api.NodeAnnotationGPUs])
		if err != nil {
			continue
		}
		for _, g := range inv {
			capacity[g.UUID], owner[g.UUID] = g.MemoryMiB, n.Name
		}
	}
	pods, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assigned := map[string]int64{}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		req, ok, err := score.PodRequest(&p)
		if err != nil || !ok {
			continue
		}
		ids := api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs])
		if p.Spec.NodeName != "" && p.Spec.SchedulerName == api.DefaultSchedulerName && len(ids) != req.Count {
			t.Errorf("pod %s/%s on %s holds %d GPUs (%v), requested %d", p.Namespace, p.Name, p.Spec.NodeName, len(ids), ids, req.Count)
		}
		for _, id := range ids {
			if p.Spec.NodeName != "" && owner[id] != p.Spec.NodeName {
				t.Errorf("pod %s/%s on %s holds GPU %s of node %q", p.Namespace, p.Name, p.Spec.NodeName, id, owner[id])
			}
			assigned[id] += req.MemoryMiB
		}
	}
	for id, a := range assigned {
		if a > capacity[id] {
			t.Errorf("GPU %s (node %s) is assigned %d MiB of %d", id, owner[id], a, capacity[id])
		}
	}
	return len(assigned)
}

// useShippedSchedulerConfig restarts the mlplane-scheduler with
// config/scheduler/config.yaml, pointed at url.
func useShippedSchedulerConfig(ctx context.Context, c *cluster.Cluster, url string) error {
	root, err := cluster.ModuleRoot()
	if err != nil {
		return err
	}
	if err := c.StopComponent(cluster.MlplaneScheduler); err != nil {
		return err
	}
	return c.StartMlplaneScheduler(ctx, url, filepath.Join(root, "config", "scheduler", "config.yaml"))
}

// deletePods deletes the pods of app in ns and waits until they are gone,
// so the next feature starts with free GPUs.
func deletePods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, app string) {
	t.Helper()
	zero := int64(0)
	// Deleting a thousand pods can outlast the API server's request
	// timeout; the deletion goes on, and the wait below sees it through.
	if err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{LabelSelector: "app=" + app}); err != nil && !apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err) {
		t.Fatal(err)
	}
	WaitPods(ctx, t, cs, ns, "app="+app, 0, LongWait, nil)
}

func TestExtender(t *testing.T) {
	burst := features.New("extender: 1,000 GPU pods at once on 50 nodes, the extender killed mid-burst").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			if len(c.NodeNames()) < 50 {
				if _, err := c.AddGPUNodes(ctx, extenderNodes, cluster.NodeOptions{Prefix: extenderPrefix, Publisher: cluster.PublishInProcess}); err != nil {
					t.Fatal(err)
				}
			}
			if err := useShippedSchedulerConfig(ctx, c, c.ExtenderURL()); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("every pod is bound, no GPU holds more than its memory, nothing double-booked across the restart", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := Local(ctx)
			cs := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "ext-burst", nil)
			start := time.Now()
			var killedAt time.Time
			wait := whenBound(ctx, cs, ns, "burst", killAfter, func() error {
				killedAt = time.Now()
				if err := c.KillComponent(cluster.Extender); err != nil {
					return err
				}
				return c.StartComponent(ctx, cluster.Extender)
			})
			createPods(ctx, t, cs, ns, "burst", burstPods)
			t.Logf("created %d pods in %s", burstPods, time.Since(start).Round(time.Millisecond))
			boundAtKill, err := wait()
			if err != nil {
				t.Fatalf("killing and restarting the extender: %v", err)
			}
			if boundAtKill >= burstPods {
				t.Fatalf("the burst was over (%d bound) before the extender was killed", boundAtKill)
			}
			t.Logf("extender killed at %d bound pods, %s into the burst, and restarted", boundAtKill, killedAt.Sub(start).Round(time.Millisecond))
			WaitPods(ctx, t, cs, ns, "app=burst", burstPods, 2*LongWait, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" })
			t.Logf("all %d pods bound %s after the first create", burstPods, time.Since(start).Round(time.Millisecond))
			used := checkNoOversubscription(ctx, t, cs)
			t.Logf("%d GPUs in use", used)
			deletePods(ctx, t, cs, ns, "burst")
			return ctx
		}).
		Assess("a pod that fits no GPU says why", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "ext-toobig", nil)
			p := gpuPodSpec(ns, "too-big", "too-big", 100, 1)
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			want := "pod needs 102400 MiB per GPU on 1 GPU"
			var last string
			err := wait.For(func(ctx context.Context) (bool, error) {
				p, err := cs.CoreV1().Pods(ns).Get(ctx, "too-big", metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				if msg, ok := unschedulable(p); ok {
					last = msg
					return strings.Contains(msg, want), nil
				}
				return false, nil
			}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
			if err != nil {
				t.Fatalf("PodScheduled message %q lacks %q: %v", last, want, err)
			}
			t.Logf("PodScheduled: %s", last)
			return ctx
		}).
		Feature()

	ha := features.New("extender: two replicas with leader election, the leader killed mid-burst").
		Assess("the follower takes over within seconds and nothing is double-booked", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			cs := Clientset(t, cfg)
			var replicas []*cluster.ExtenderReplica
			for _, name := range []string{"extender-a", "extender-b"} {
				r, err := c.StartExtenderReplica(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				replicas = append(replicas, r)
				t.Cleanup(func() { _ = c.StopComponent(name) })
			}
			// A Service sends connections to ready endpoints only; this
			// router does the same for the scheduler (TLS runs end to end).
			router := newReadyRouter(replicas)
			ln, err := listenLoopback()
			if err != nil {
				t.Fatal(err)
			}
			go router.serve(ln)
			t.Cleanup(func() {
				_ = ln.Close()
				// Give the scheduler back the suite's extender.
				if err := useShippedSchedulerConfig(context.Background(), c, c.ExtenderURL()); err != nil {
					t.Error(err)
				}
			})
			if err := useShippedSchedulerConfig(ctx, c, "https://"+ln.Addr().String()); err != nil {
				t.Fatal(err)
			}
			leader := waitLeader(ctx, t, router, "")
			t.Logf("leader: %s", leader.Name)

			ns := CreateNamespace(ctx, t, cfg, "ext-ha", nil)
			var killed time.Time
			wait := whenBound(ctx, cs, ns, "ha", haKill, func() error {
				killed = time.Now()
				return c.KillComponent(leader.Name)
			})
			createPods(ctx, t, cs, ns, "ha", haPods)
			boundAtKill, err := wait()
			if err != nil {
				t.Fatal(err)
			}
			if boundAtKill >= haPods {
				t.Fatalf("the burst was over (%d bound) before the leader was killed", boundAtKill)
			}
			next := waitLeader(ctx, t, router, leader.Name)
			t.Logf("leader %s killed at %d bound pods; %s leads %s later", leader.Name, boundAtKill, next.Name, time.Since(killed).Round(time.Millisecond))
			WaitPods(ctx, t, cs, ns, "app=ha", haPods, 2*LongWait, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" })
			checkNoOversubscription(ctx, t, cs)
			deletePods(ctx, t, cs, ns, "ha")
			return ctx
		}).
		Feature()

	testenv.Test(t, burst, ha)
}

// readyRouter forwards each connection to the replica whose /leaderz
// answers 200, as a Service with readiness probes does: kube-proxy forwards
// connections, so TLS runs between the scheduler and the replica.
type readyRouter struct {
	replicas []*cluster.ExtenderReplica
	client   *http.Client
	mu       sync.Mutex
	current  *cluster.ExtenderReplica
	checked  time.Time
}

func newReadyRouter(rs []*cluster.ExtenderReplica) *readyRouter {
	return &readyRouter{replicas: rs, client: &http.Client{Timeout: time.Second}}
}

// ready returns the replica that is ready now (checked at most every 200ms).
func (r *readyRouter) ready() *cluster.ExtenderReplica {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current != nil && time.Since(r.checked) < 200*time.Millisecond {
		return r.current
	}
	r.current, r.checked = nil, time.Now()
	for _, rep := range r.replicas {
		resp, err := r.client.Get(rep.LeaderURL)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			r.current = rep
			break
		}
	}
	return r.current
}

// serve forwards the connections ln accepts until it is closed.
func (r *readyRouter) serve(ln net.Listener) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		go r.forward(in)
	}
}

// forward copies a connection to the ready replica and back; with none
// ready it is closed, as a Service without endpoints refuses it.
func (r *readyRouter) forward(in net.Conn) {
	defer in.Close()
	rep := r.ready()
	if rep == nil {
		return
	}
	u, _ := url.Parse(rep.URL)
	out, err := net.Dial("tcp", u.Host)
	if err != nil {
		return
	}
	defer out.Close()
	go func() {
		_, _ = io.Copy(out, in)
		_ = out.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(in, out)
}

// waitLeader waits until a replica other than not is ready and returns it.
func waitLeader(ctx context.Context, t *testing.T, r *readyRouter, not string) *cluster.ExtenderReplica {
	t.Helper()
	var got *cluster.ExtenderReplica
	err := wait.For(func(context.Context) (bool, error) {
		got = r.ready()
		return got != nil && got.Name != not, nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(100*time.Millisecond))
	if err != nil {
		t.Fatalf("no extender replica became the leader: %v", err)
	}
	return got
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
