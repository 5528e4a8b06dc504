package extender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
	"github.com/mlplane/mlplane/internal/score/state"
)

const gi = 1024

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// gpuNode is a node with n GPUs of sizeGi each, its inventory annotated.
func gpuNode(name string, n int, sizeGi int64) *corev1.Node {
	gpus := make([]api.GPU, n)
	for i := range gpus {
		gpus[i] = api.GPU{Index: i, UUID: fmt.Sprintf("GPU-%s-%d", name, i), Model: "H100", MemoryMiB: sizeGi * gi, Healthy: true}
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{api.NodeAnnotationGPUs: api.EncodeInventory(gpus)}}}
}

func agentLease(node string, renewed time.Time) *coordinationv1.Lease {
	t := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: api.LeaseNamespace, Name: api.LeaseName(node)}, Spec: coordinationv1.LeaseSpec{RenewTime: &t}}
}

// gpuPod requests memGi on each of count GPUs through the webhook's annotations.
func gpuPod(name string, memGi int64, count int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1",
			Annotations: map[string]string{api.AnnotationGPUMemory: fmt.Sprintf("%dGi", memGi), api.AnnotationGPUCount: strconv.Itoa(count)}},
		Spec: corev1.PodSpec{SchedulerName: api.DefaultSchedulerName, Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{api.ResourceGPUMemory: *resourceMiB(memGi * gi * int64(count))}}}}},
	}
}

// fixture is an extender over a fake clientset that behaves like the API
// server where it matters: a Binding sets spec.nodeName once, copies its own
// annotations onto the pod in the same update, is refused with a Conflict
// when its metadata.uid is not the pod's, and bumps resourceVersion (k8s.io/
// kubernetes pkg/registry/core/pod/storage, BindingREST).
type fixture struct {
	client *fake.Clientset
	st     *state.State
	ext    *Extender
	leader bool
	mu     sync.Mutex // serialises the reactors' read-modify-write
	rv     int
	// failBind makes the next Bindings fail.
	failBind func() error
	// bindings counts the Binding calls, patches and gets the pod patches
	// and reads; lastBinding is the last Binding sent.
	bindings, patches, gets int
	lastBinding             *corev1.Binding
}

func newFixture(t *testing.T, nodes ...*corev1.Node) *fixture {
	t.Helper()
	f := &fixture{client: fake.NewClientset(), leader: true, rv: 100}
	f.st = state.New(state.Options{Now: func() time.Time { return now }})
	for _, n := range nodes {
		if _, err := f.client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.st.OnNode(n)
		f.st.OnLease(agentLease(n.Name, now.Add(-time.Second)))
	}
	f.client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.patches++
		return false, nil, nil
	})
	f.client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.gets++
		return false, nil, nil
	})
	f.client.PrependReactor("create", "pods", f.bind)
	f.ext = New(Options{Client: f.client, State: f.st, Leader: func() bool { return f.leader }})
	return f
}

func (f *fixture) addPod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if _, err := f.client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p, err := f.client.CoreV1().Pods("ml").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) bind(action k8stesting.Action) (bool, runtime.Object, error) {
	ca := action.(k8stesting.CreateAction)
	if ca.GetSubresource() != "binding" {
		return false, nil, nil
	}
	b := ca.GetObject().(*corev1.Binding)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bindings++
	f.lastBinding = b.DeepCopy()
	if f.failBind != nil {
		if err := f.failBind(); err != nil {
			return true, nil, err
		}
	}
	obj, err := f.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), b.Namespace, b.Name)
	if err != nil {
		return true, nil, err
	}
	pod := obj.(*corev1.Pod).DeepCopy()
	if b.UID != "" && b.UID != pod.UID {
		return true, nil, apierrors.NewConflict(corev1.Resource("pods/binding"), pod.Name, fmt.Errorf("Precondition failed: UID in precondition: %s, UID in object meta: %s", b.UID, pod.UID))
	}
	if pod.Spec.NodeName != "" {
		return true, nil, apierrors.NewConflict(corev1.Resource("pods/binding"), pod.Name, fmt.Errorf("pod %s is already assigned to node %q", pod.Name, pod.Spec.NodeName))
	}
	pod.Spec.NodeName = b.Target.Name
	for k, v := range b.Annotations {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[k] = v
	}
	f.rv++
	pod.ResourceVersion = strconv.Itoa(f.rv)
	return true, b, f.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), pod, pod.Namespace)
}

// bindPod calls Bind as the scheduler would.
func (f *fixture) bindPod(t *testing.T, name, node string) *extenderv1.ExtenderBindingResult {
	t.Helper()
	return f.ext.Bind(context.Background(), &extenderv1.ExtenderBindingArgs{PodName: name, PodNamespace: "ml", PodUID: types.UID("uid-" + name), Node: node})
}

func freeMiB(f *fixture, node string) []int64 {
	var out []int64
	f.st.View(func(c *score.Cluster, _ int64) {
		for _, g := range c.Node(node).GPUs {
			out = append(out, g.FreeMiB())
		}
	})
	return out
}

func TestFilter(t *testing.T) {
	f := newFixture(t, gpuNode("big", 2, 80), gpuNode("small", 2, 24), gpuNode("full", 1, 80), gpuNode("dead", 1, 80))
	// dead's agent last renewed 45 s ago when the extender first saw its
	// Lease (a later renewTime that goes back counts as a renewal: the
	// extender judges Leases by its own clock).
	f.st.OnLeaseDelete(agentLease("dead", now))
	f.st.OnLease(agentLease("dead", now.Add(-api.LeaseDuration-5*time.Second)))
	f.st.Update(func(tx state.Txn, _ int64) error {
		tx.Reserve("x", score.Assignment{GPUs: []string{"GPU-full-0"}, MemoryMiB: 68 * gi})
		return nil
	})
	plain := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cpu"}}
	f.st.OnNode(plain)
	names := []string{"big", "small", "full", "dead", "cpu", "unknown"}
	res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod("p", 40, 1), NodeNames: &names})
	if d := cmp.Diff([]string{"big"}, *res.NodeNames); d != "" {
		t.Fatalf("passed (-want +got):\n%s", d)
	}
	// A node passed: the scheduler will not read the others' reasons.
	if res.FailedNodes != nil || res.FailedAndUnresolvableNodes != nil {
		t.Fatalf("reasons sent although a node passed: %+v", res)
	}
	// No node passes: every reason, resolvable (preemption may help) or
	// not. full: 81920 - 69632 = 12288 MiB free.
	names = names[1:]
	res = f.ext.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod("p", 40, 1), NodeNames: &names})
	if len(*res.NodeNames) != 0 {
		t.Fatalf("passed %v", *res.NodeNames)
	}
	wantFailed := extenderv1.FailedNodesMap{"full": "largest free GPU has 12288 MiB, pod needs 40960 MiB per GPU on 1 GPU"}
	if d := cmp.Diff(wantFailed, res.FailedNodes); d != "" {
		t.Errorf("FailedNodes (-want +got):\n%s", d)
	}
	wantUnres := extenderv1.FailedNodesMap{
		"small":   "largest GPU has 24576 MiB, pod needs 40960 MiB per GPU on 1 GPU",
		"dead":    "node agent Lease mlplane-system/mlplane-gpu-dead expired 5s ago",
		"cpu":     state.NodeProblemNoInventory,
		"unknown": "node has no GPU inventory (no mlplane.io/gpus annotation seen)",
	}
	if d := cmp.Diff(wantUnres, res.FailedAndUnresolvableNodes); d != "" {
		t.Errorf("FailedAndUnresolvableNodes (-want +got):\n%s", d)
	}

	// A pod without a GPU request passes untouched.
	cpuPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	names = append([]string{"big"}, names...)
	res = f.ext.Filter(&extenderv1.ExtenderArgs{Pod: cpuPod, NodeNames: &names})
	if d := cmp.Diff(names, *res.NodeNames); d != "" || len(res.FailedNodes)+len(res.FailedAndUnresolvableNodes) != 0 {
		t.Fatalf("plain pod filtered: %s %v", d, res)
	}
	// An invalid request fails every node with the parse error.
	bad := gpuPod("bad", 1, 1)
	bad.Annotations[api.AnnotationGPUCount] = "zero"
	res = f.ext.Filter(&extenderv1.ExtenderArgs{Pod: bad, NodeNames: &names})
	if len(*res.NodeNames) != 0 || !strings.HasPrefix(res.FailedAndUnresolvableNodes["big"], `annotation mlplane.io/gpu-count: invalid value "zero"`) {
		t.Fatalf("bad request: %+v", res)
	}
}

func TestPrioritize(t *testing.T) {
	f := newFixture(t, gpuNode("a", 2, 80), gpuNode("b", 2, 80), gpuNode("c", 2, 80))
	f.st.Update(func(tx state.Txn, _ int64) error {
		tx.Reserve("x", score.Assignment{GPUs: []string{"GPU-b-0"}, MemoryMiB: 60 * gi})
		tx.Reserve("y", score.Assignment{GPUs: []string{"GPU-c-0"}, MemoryMiB: 70 * gi})
		return nil
	})
	names := []string{"a", "b", "c"}
	got := f.ext.Prioritize(&extenderv1.ExtenderArgs{Pod: gpuPod("p", 20, 1), NodeNames: &names})
	// b: its 20 GiB hole is an exact fit (node (60+20)/160 = 5, gpu 10 -> 25);
	// a: breaks an empty GPU (1.25 + 2*2.5 - 30 = -23.75);
	// c: 10 GiB hole too small, breaks an empty GPU ((70+20)/160 = 5.625 + 5 - 30 = -19.375).
	// Normalized: b 10; c (−19.375+23.75)/(25+23.75)*9 = 0.8 -> 0; a 0.
	want := extenderv1.HostPriorityList{{Host: "a", Score: 0}, {Host: "b", Score: 10}, {Host: "c", Score: 0}}
	if d := cmp.Diff(want, *got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

// TestFilterCandidateNodes: the filter hands back only the policy's
// candidateNodes best nodes, ranked as Prioritize ranks them; ties go to the
// node offered first, as in the simulator.
func TestFilterCandidateNodes(t *testing.T) {
	f := newFixture(t, gpuNode("a", 2, 80), gpuNode("b", 2, 80), gpuNode("c", 2, 80), gpuNode("d", 2, 80), gpuNode("e", 1, 16))
	f.st.Update(func(tx state.Txn, _ int64) error {
		tx.Reserve("x", score.Assignment{GPUs: []string{"GPU-b-0"}, MemoryMiB: 60 * gi})
		tx.Reserve("y", score.Assignment{GPUs: []string{"GPU-c-0"}, MemoryMiB: 70 * gi})
		return nil
	})
	// Raw scores as in TestPrioritize: b 25, c -19.375, a and d -23.75 (a
	// tie); e is too small.
	names := []string{"a", "b", "c", "d", "e"}
	for _, tc := range []struct {
		candidates int32
		want       []string
	}{
		{1, []string{"b"}},
		{2, []string{"b", "c"}},
		{3, []string{"b", "c", "a"}},
		{4, []string{"b", "c", "a", "d"}},
		{10, []string{"b", "c", "a", "d"}},
		{0, []string{"a", "b", "c", "d"}}, // every fit, in the scheduler's order
	} {
		pol := score.DefaultPolicy()
		pol.CandidateNodes = &tc.candidates
		placer, err := score.NewPlacer(pol)
		if err != nil {
			t.Fatal(err)
		}
		f.ext.o.Policy = PlacerFunc(func() *score.Placer { return placer })
		res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod("p", 20, 1), NodeNames: &names})
		if d := cmp.Diff(tc.want, *res.NodeNames); d != "" {
			t.Errorf("candidateNodes %d: passed (-want +got):\n%s", tc.candidates, d)
		}
		if res.FailedNodes != nil || res.FailedAndUnresolvableNodes != nil {
			t.Errorf("candidateNodes %d: reasons sent although nodes passed: %+v", tc.candidates, res)
		}
	}
	// The default policy hands back one node: the extender decides.
	f.ext.o.Policy = PlacerFunc(func() *score.Placer { p, _ := score.NewPlacer(score.DefaultPolicy()); return p })
	if res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod("p", 20, 1), NodeNames: &names}); !cmp.Equal(*res.NodeNames, []string{"b"}) {
		t.Errorf("default policy passed %v, want [b]", *res.NodeNames)
	}
}

// TestFilterHolds: with one candidate the filter holds the pod's GPUs until
// its bind, so the next pod, filtered before that bind arrives (the
// scheduler binds asynchronously), is not offered the same memory; the bind
// then takes over the hold.
func TestFilterHolds(t *testing.T) {
	f := newFixture(t, gpuNode("x", 1, 80), gpuNode("y", 2, 80))
	f.st.Update(func(tx state.Txn, _ int64) error {
		tx.Reserve("other", score.Assignment{GPUs: []string{"GPU-x-0"}, MemoryMiB: 50 * gi})
		return nil
	})
	names := []string{"x", "y"}
	p1, p2 := gpuPod("p1", 20, 1), gpuPod("p2", 20, 1)
	f.addPod(t, p1)
	if res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p1, NodeNames: &names}); !cmp.Equal(*res.NodeNames, []string{"x"}) {
		t.Fatalf("p1 offered %v, want the fuller node x", *res.NodeNames)
	}
	if d := cmp.Diff([]int64{10 * gi}, freeMiB(f, "x")); d != "" {
		t.Fatalf("no hold on x: %s", d)
	}
	// Filtering p1 again (a retry) moves its hold, it does not add one.
	if res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p1, NodeNames: &names}); !cmp.Equal(*res.NodeNames, []string{"x"}) || !cmp.Equal(freeMiB(f, "x"), []int64{10 * gi}) {
		t.Fatalf("refilter: offered %v, x free %v", *res.NodeNames, freeMiB(f, "x"))
	}
	res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p2, NodeNames: &names})
	if !cmp.Equal(*res.NodeNames, []string{"y"}) {
		t.Fatalf("p2 offered %v, want y: x's free memory is held for p1", *res.NodeNames)
	}
	// Filtered on x alone, p2 learns why.
	onlyX := []string{"x"}
	if got := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p2, NodeNames: &onlyX}).FailedNodes["x"]; got != "largest free GPU has 10240 MiB, pod needs 20480 MiB per GPU on 1 GPU" {
		t.Errorf("x's reason for p2: %q", got)
	}
	// p1's bind on x uses its held memory (x has only 10 GiB free for
	// anyone else) and replaces the hold with its reservation.
	if r := f.bindPod(t, "p1", "x"); r.Error != "" {
		t.Fatalf("bind p1: %s", r.Error)
	}
	if d := cmp.Diff([]int64{10 * gi}, freeMiB(f, "x")); d != "" {
		t.Fatalf("x after p1's bind: %s", d)
	}
	if n := testutil.ToFloat64(f.ext.o.Metrics.filterHolds); n != 3 {
		t.Errorf("filter_holds_total = %v, want 3", n)
	}
}

func TestBindHappyPath(t *testing.T) {
	f := newFixture(t, gpuNode("n", 2, 80))
	f.addPod(t, gpuPod("p1", 30, 1))
	f.addPod(t, gpuPod("p2", 60, 1))
	if r := f.bindPod(t, "p1", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	// One API call: the Binding, carrying the pod's UID and the GPUs.
	if b := f.lastBinding; f.bindings != 1 || b.Name != "p1" || b.Namespace != "ml" || b.UID != "uid-p1" || b.Target.Name != "n" ||
		!cmp.Equal(b.Annotations, map[string]string{api.AnnotationGPUIDs: "GPU-n-0"}) {
		t.Fatalf("%d bindings, last %+v", f.bindings, b)
	}
	if f.patches != 0 {
		t.Fatalf("%d pod patches, want none", f.patches)
	}
	p1 := f.pod(t, "p1")
	if p1.Spec.NodeName != "n" || p1.Annotations[api.AnnotationGPUIDs] != "GPU-n-0" {
		t.Fatalf("p1 bound to %q with %q", p1.Spec.NodeName, p1.Annotations[api.AnnotationGPUIDs])
	}
	// The reservation counts before the informer sees the pod: 80-30 = 50 GiB left on GPU 0.
	if d := cmp.Diff([]int64{50 * gi, 80 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatal(d)
	}
	// 60 GiB does not fit GPU 0 any more: best fit is GPU 1.
	if r := f.bindPod(t, "p2", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if got := f.pod(t, "p2").Annotations[api.AnnotationGPUIDs]; got != "GPU-n-1" {
		t.Fatalf("p2 on %q", got)
	}
	// The informer confirms: the reservation becomes the pod's record.
	f.st.OnPod(f.pod(t, "p1"))
	f.st.OnPod(f.pod(t, "p2"))
	if n := f.st.Reservations(); n != 0 {
		t.Fatalf("%d reservations left after confirmation", n)
	}
	if d := cmp.Diff([]int64{50 * gi, 20 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatal(d)
	}
	// A third pod that does not fit is refused, and nothing is written.
	f.addPod(t, gpuPod("p3", 60, 1))
	before := f.bindings
	if r := f.bindPod(t, "p3", "n"); !strings.Contains(r.Error, "largest free GPU has 51200 MiB, pod needs 61440 MiB") {
		t.Fatalf("p3: %q", r.Error)
	}
	if f.bindings != before || f.patches != 0 {
		t.Fatal("a refused bind wrote to the pod")
	}
}

func TestBindRetried(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	f.addPod(t, gpuPod("p", 30, 1))
	if r := f.bindPod(t, "p", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	patches, bindings := f.patches, f.bindings
	// The scheduler retries (its first call timed out): success, no new writes.
	if r := f.bindPod(t, "p", "n"); r.Error != "" {
		t.Fatalf("retried bind: %s", r.Error)
	}
	if f.patches != patches || f.bindings != bindings {
		t.Fatal("retried bind wrote again")
	}
	// Bound elsewhere is an error.
	if r := f.bindPod(t, "p", "other"); !strings.Contains(r.Error, "already bound to node n") {
		t.Fatalf("bind to another node: %q", r.Error)
	}
	// A lost response to a successful Binding: an earlier attempt bound q
	// with GPU 0 (the API server applied it, the answer never came), the
	// retry picked other GPUs and its Binding fails with "already
	// assigned", yet the pod is on our node: success, and the GPUs the pod
	// really holds are the ones booked.
	f.addPod(t, gpuPod("q", 30, 1))
	f.failBind = func() error {
		f.failBind = nil
		obj, _ := f.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), "ml", "q")
		pod := obj.(*corev1.Pod).DeepCopy()
		pod.Spec.NodeName = "n"
		pod.Annotations[api.AnnotationGPUIDs] = "GPU-n-0"
		_ = f.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), pod, "ml")
		return apierrors.NewConflict(corev1.Resource("pods/binding"), "q", fmt.Errorf("already assigned"))
	}
	if r := f.bindPod(t, "q", "n"); r.Error != "" {
		t.Fatalf("lost-response bind: %s", r.Error)
	}
	if f.pod(t, "q").Annotations[api.AnnotationGPUIDs] != "GPU-n-0" {
		t.Fatal("annotation changed on a bind that had succeeded")
	}
	// p (informer not run: its reservation) and q hold 30 GiB each.
	if d := cmp.Diff([]int64{20 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatal(d)
	}
}

// TestBindStaleCache: the informer's cache still shows the pod unbound
// although an earlier bind placed it; the Binding is refused with a
// Conflict, the pod read back is bound to the node with its GPUs: success,
// and the GPUs this attempt picked go back.
func TestBindStaleCache(t *testing.T) {
	f := newFixture(t, gpuNode("n", 2, 80))
	stale := gpuPod("p", 30, 1)
	f.ext.o.PodCache = func(ns, name string) (*corev1.Pod, bool) { return stale, ns == "ml" && name == "p" }
	bound := stale.DeepCopy()
	bound.Spec.NodeName = "n"
	bound.Annotations[api.AnnotationGPUIDs] = "GPU-n-1"
	f.addPod(t, bound)
	if r := f.bindPod(t, "p", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if f.bindings != 1 || f.gets != 1 {
		t.Fatalf("%d bindings, %d gets: want the refused Binding and one read", f.bindings, f.gets)
	}
	if d := cmp.Diff([]int64{80 * gi, 50 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatalf("booked GPUs: %s", d)
	}
	f.st.OnPod(f.pod(t, "p"))
	if n := f.st.Reservations(); n != 0 {
		t.Fatalf("%d reservations left after confirmation", n)
	}
}

// TestBindFromCache: a pod the informer holds is bound with the Binding
// alone, no read.
func TestBindFromCache(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	p := gpuPod("p", 30, 1)
	p.Annotations[api.AnnotationPlacement] = "spread"
	f.addPod(t, p)
	f.ext.o.PodCache = func(ns, name string) (*corev1.Pod, bool) {
		obj, err := f.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), ns, name)
		if err != nil {
			return nil, false
		}
		return obj.(*corev1.Pod), true
	}
	if r := f.bindPod(t, "p", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if f.gets != 0 || f.patches != 0 || f.bindings != 1 {
		t.Fatalf("%d gets, %d patches, %d bindings: want the Binding alone", f.gets, f.patches, f.bindings)
	}
	obj, _ := f.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), "ml", "p")
	if got := obj.(*corev1.Pod); got.Spec.NodeName != "n" || got.Annotations[api.AnnotationGPUIDs] != "GPU-n-0" {
		t.Fatalf("pod on %q with %q", got.Spec.NodeName, got.Annotations[api.AnnotationGPUIDs])
	}
	// A cached pod of another UID (replaced since) is read from the API server.
	old := gpuPod("r", 30, 1)
	old.UID = "uid-old"
	f.ext.o.PodCache = func(string, string) (*corev1.Pod, bool) { return old, true }
	f.addPod(t, gpuPod("r", 10, 1))
	if r := f.bindPod(t, "r", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if f.gets != 1 {
		t.Fatalf("%d gets, want 1", f.gets)
	}
	if d := cmp.Diff([]int64{40 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatal(d)
	}
}

// TestBindRefusedReleases: a Binding the API server refused wrote nothing
// (annotation and node are one atomic update), and its GPUs are free again.
func TestBindRefusedReleases(t *testing.T) {
	for _, fail := range []error{
		apierrors.NewServiceUnavailable("etcd is sad"),
		apierrors.NewConflict(corev1.Resource("pods/binding"), "p", fmt.Errorf("the object has been modified")),
	} {
		f := newFixture(t, gpuNode("n", 1, 80))
		f.addPod(t, gpuPod("p", 30, 1))
		f.failBind = func() error { return fail }
		r := f.bindPod(t, "p", "n")
		if !strings.Contains(r.Error, fail.Error()) {
			t.Fatalf("error %q", r.Error)
		}
		p := f.pod(t, "p")
		if _, has := p.Annotations[api.AnnotationGPUIDs]; has || p.Spec.NodeName != "" {
			t.Fatalf("pod written: %v node %q", p.Annotations, p.Spec.NodeName)
		}
		if d := cmp.Diff([]int64{80 * gi}, freeMiB(f, "n")); d != "" {
			t.Fatalf("reservation not released: %s", d)
		}
		f.failBind = nil
		if r := f.bindPod(t, "p", "n"); r.Error != "" {
			t.Fatal(r.Error)
		}
	}
}

// TestBindUIDPrecondition: the pod was deleted and recreated under the same
// name after the cache saw it: the Binding names the old UID and is refused,
// and nothing stays booked.
func TestBindUIDPrecondition(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	cached := gpuPod("p", 30, 1)
	f.ext.o.PodCache = func(string, string) (*corev1.Pod, bool) { return cached, true }
	now := gpuPod("p", 30, 1)
	now.UID = "uid-new"
	f.addPod(t, now)
	if r := f.bindPod(t, "p", "n"); !strings.Contains(r.Error, "Precondition failed") {
		t.Fatalf("error %q", r.Error)
	}
	if p := f.pod(t, "p"); p.Spec.NodeName != "" || p.Annotations[api.AnnotationGPUIDs] != "" {
		t.Fatal("replaced pod was bound")
	}
	if d := cmp.Diff([]int64{80 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatalf("reservation not released: %s", d)
	}
}

// TestHugeRequests: a GPU memory beyond one GPU (8Ei overflowed into a
// negative MiB) or a bare number fails every node with the parse error, is
// never bound, and books nothing; a bound pod hand-annotated with such a
// value books its GPU whole instead of wiping the other bookings there.
func TestHugeRequests(t *testing.T) {
	const tooLarge = "more than one GPU can have: want at most 1Ti (1048576Mi) per GPU"
	f := newFixture(t, gpuNode("n", 2, 80))
	names := []string{"n"}
	for mem, want := range map[string]string{
		"8Ei":                    `annotation mlplane.io/gpu-memory: invalid value "8Ei": ` + tooLarge,
		"9Ei":                    `annotation mlplane.io/gpu-memory: invalid value "9Ei": ` + tooLarge,
		"99999999999999999999Gi": `annotation mlplane.io/gpu-memory: invalid value "99999999999999999999Gi": ` + tooLarge,
		"20480":                  `annotation mlplane.io/gpu-memory: invalid value "20480": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 20480Mi or 20Gi`,
	} {
		p := gpuPod("huge", 1, 1)
		p.Annotations[api.AnnotationGPUMemory] = mem
		res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p, NodeNames: &names})
		if len(*res.NodeNames) != 0 || len(res.FailedNodes) != 0 {
			t.Fatalf("%s: %+v", mem, res)
		}
		if d := cmp.Diff(extenderv1.FailedNodesMap{"n": want}, res.FailedAndUnresolvableNodes); d != "" {
			t.Errorf("%s: FailedAndUnresolvableNodes (-want +got):\n%s", mem, d)
		}
		f.addPod(t, p)
		if r := f.bindPod(t, "huge", "n"); r.Error != want {
			t.Errorf("%s: bind error %q, want %q", mem, r.Error, want)
		}
		if got := f.pod(t, "huge").Spec.NodeName; got != "" {
			t.Errorf("%s: bound to %q", mem, got)
		}
		if err := f.client.CoreV1().Pods("ml").Delete(context.Background(), "huge", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]int64{80 * gi, 80 * gi}, freeMiB(f, "n")); d != "" {
			t.Fatalf("%s: booked (-want +got):\n%s", mem, d)
		}
	}

	// 30 GiB booked on GPU 1; a hand-annotated 8Ei pod on GPU 0 books it
	// whole (it used to book -8796093022207 MiB there). Its containers
	// request nothing: with a request, that would be booked instead
	// (state.Assignment).
	other := gpuPod("other", 30, 1)
	other.Annotations[api.AnnotationGPUIDs] = "GPU-n-1"
	f.st.OnPod(other)
	bad := gpuPod("bad", 1, 1)
	bad.Annotations[api.AnnotationGPUMemory] = "8Ei"
	bad.Annotations[api.AnnotationGPUIDs] = "GPU-n-0"
	bad.Spec.NodeName = "n"
	bad.Spec.Containers[0].Resources = corev1.ResourceRequirements{}
	f.st.OnPod(bad)
	if d := cmp.Diff([]int64{0, 50 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatalf("free (-want +got):\n%s", d)
	}
	res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod("p", 60, 1), NodeNames: &names})
	if d := cmp.Diff(extenderv1.FailedNodesMap{"n": "largest free GPU has 51200 MiB, pod needs 61440 MiB per GPU on 1 GPU"}, res.FailedNodes); d != "" {
		t.Fatalf("60 GiB pod (-want +got):\n%s", d)
	}
}

func TestBindChecks(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	f.addPod(t, gpuPod("p", 30, 1))
	f.leader = false
	if r := f.bindPod(t, "p", "n"); r.Error != notReadyMessage {
		t.Fatalf("follower bound: %q", r.Error)
	}
	f.leader = true
	r := f.ext.Bind(context.Background(), &extenderv1.ExtenderBindingArgs{PodName: "p", PodNamespace: "ml", PodUID: "other", Node: "n"})
	if !strings.Contains(r.Error, "was replaced") {
		t.Fatalf("uid mismatch: %q", r.Error)
	}
	// A pod that needs no GPU is simply bound.
	f.addPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "web", UID: "uid-web"}})
	if r := f.bindPod(t, "web", "n"); r.Error != "" || f.pod(t, "web").Spec.NodeName != "n" {
		t.Fatalf("plain pod: %q", r.Error)
	}
}

// TestBindReplacesOwnStaleAssignment: a bind that crashed after writing the
// annotation leaves the pod holding GPUs; its retry may use them.
func TestBindReplacesOwnStaleAssignment(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	p := gpuPod("p", 60, 1)
	p.Annotations[api.AnnotationGPUIDs] = "GPU-n-0"
	f.addPod(t, p)
	f.st.OnPod(p) // counted: 20 GiB free for anyone else
	if d := cmp.Diff([]int64{20 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatal(d)
	}
	if r := f.bindPod(t, "p", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if d := cmp.Diff([]int64{20 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatalf("own assignment double-counted: %s", d)
	}
}

func TestHTTP(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	f.addPod(t, gpuPod("p", 30, 1))
	srv := httptest.NewServer(f.ext.Handler())
	defer srv.Close()
	post := func(path string, body []byte) (*http.Response, string) {
		resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp, b.String()
	}
	for _, path := range []string{PathFilter, PathPrioritize, PathBind} {
		resp, body := post(path, []byte("{not json"))
		if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(body, "malformed request body:") {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	if resp, body := post(PathBind, []byte(`{"PodName":"p"}`)); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "bind needs PodName, PodNamespace and Node") {
		t.Errorf("incomplete bind: %d %q", resp.StatusCode, body)
	}
	names := []string{"n"}
	args, _ := json.Marshal(extenderv1.ExtenderArgs{Pod: gpuPod("p", 30, 1), NodeNames: &names})
	resp, body := post(PathFilter, args)
	var fr extenderv1.ExtenderFilterResult
	if err := json.Unmarshal([]byte(body), &fr); err != nil || resp.StatusCode != 200 || fr.NodeNames == nil || len(*fr.NodeNames) != 1 {
		t.Fatalf("filter: %d %s", resp.StatusCode, body)
	}
	resp, body = post(PathPrioritize, args)
	var pr extenderv1.HostPriorityList
	if err := json.Unmarshal([]byte(body), &pr); err != nil || len(pr) != 1 || pr[0].Score != score.MaxScore {
		t.Fatalf("prioritize: %d %s", resp.StatusCode, body)
	}
	bargs, _ := json.Marshal(extenderv1.ExtenderBindingArgs{PodName: "p", PodNamespace: "ml", PodUID: "uid-p", Node: "n"})
	resp, body = post(PathBind, bargs)
	var br extenderv1.ExtenderBindingResult
	if err := json.Unmarshal([]byte(body), &br); err != nil || br.Error != "" || resp.StatusCode != 200 {
		t.Fatalf("bind: %d %s", resp.StatusCode, body)
	}
	if resp, _ := http.Get(srv.URL + PathFilter); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET filter: %d", resp.StatusCode)
	}
}

func TestNotReady(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	f.ext.o.Ready = func() bool { return false }
	srv := httptest.NewServer(f.ext.Handler())
	defer srv.Close()
	names := []string{"n"}
	args, _ := json.Marshal(extenderv1.ExtenderArgs{Pod: gpuPod("p", 30, 1), NodeNames: &names})
	resp, err := http.Post(srv.URL+PathFilter, "application/json", bytes.NewReader(args))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fr extenderv1.ExtenderFilterResult
	if err := json.NewDecoder(resp.Body).Decode(&fr); err != nil || fr.Error != notReadyMessage {
		t.Fatalf("not-ready filter answered %+v %v", fr, err)
	}
}

// TestConcurrentBinds binds many pods at once, from many goroutines, as
// several schedulers sharing one extender would, and checks from the pods'
// annotations (the API server's truth) that no GPU holds more than its
// capacity. Run with -race.
func TestConcurrentBinds(t *testing.T) {
	const nodes, gpus, pods = 4, 4, 300
	var ns []*corev1.Node
	for i := range nodes {
		ns = append(ns, gpuNode(fmt.Sprintf("n%d", i), gpus, 80))
	}
	f := newFixture(t, ns...)
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int64{4, 8, 16, 20, 24, 40, 70}
	for i := range pods {
		count := 1
		if i%25 == 0 {
			count = 2
		}
		f.addPod(t, gpuPod(fmt.Sprintf("p%d", i), sizes[rng.IntN(len(sizes))], count))
	}
	var wg sync.WaitGroup
	var bound sync.Map
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("p%d", i)
			node := fmt.Sprintf("n%d", i%nodes)
			if r := f.bindPod(t, name, node); r.Error == "" {
				bound.Store(name, true)
			}
			// Informer events arrive concurrently with binds.
			if p, err := f.client.CoreV1().Pods("ml").Get(context.Background(), name, metav1.GetOptions{}); err == nil && i%3 == 0 {
				f.st.OnPod(p)
			}
		}()
	}
	wg.Wait()

	list, err := f.client.CoreV1().Pods("ml").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]int64{}
	nBound := 0
	for _, p := range list.Items {
		ids := api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs])
		_, ok := bound.Load(p.Name)
		if ok != (p.Spec.NodeName != "") || ok != (len(ids) > 0) {
			t.Errorf("%s: bind reported %v, node %q, gpus %v", p.Name, ok, p.Spec.NodeName, ids)
		}
		if !ok {
			continue
		}
		nBound++
		req, _, _ := score.PodRequest(&p)
		if len(ids) != req.Count {
			t.Errorf("%s: %d GPUs for a request of %d", p.Name, len(ids), req.Count)
		}
		for _, id := range ids {
			if !strings.HasPrefix(id, "GPU-"+p.Spec.NodeName+"-") {
				t.Errorf("%s on %s got GPU %s", p.Name, p.Spec.NodeName, id)
			}
			used[id] += req.MemoryMiB
		}
	}
	for id, u := range used {
		if u > 80*gi {
			t.Errorf("GPU %s oversubscribed: %d MiB of %d", id, u, 80*gi)
		}
	}
	if nBound == 0 || nBound == pods {
		t.Fatalf("%d of %d bound: the test should fill the GPUs", nBound, pods)
	}
	t.Logf("%d of %d pods bound", nBound, pods)
}

func resourceMiB(mib int64) *resource.Quantity { return resource.NewQuantity(mib, resource.DecimalSI) }

// TestBindUnknownOutcomeKeepsReservation: a write that failed without an
// answer from the API server may still have happened; the GPUs stay booked.
func TestBindUnknownOutcomeKeepsReservation(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	f.addPod(t, gpuPod("p", 30, 1))
	f.failBind = func() error { return errors.New("connection reset by peer") }
	if r := f.bindPod(t, "p", "n"); !strings.Contains(r.Error, "connection reset") {
		t.Fatalf("error %q", r.Error)
	}
	// 80 - 30: still reserved.
	if d := cmp.Diff([]int64{50 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatalf("reservation dropped on an unknown outcome: %s", d)
	}

	g := newFixture(t, gpuNode("n", 1, 80))
	g.addPod(t, gpuPod("q", 30, 1))
	// The reads after the failure fail too: still unknown, still booked.
	g.failBind = func() error { return errors.New("http2: timeout awaiting response headers") }
	g.client.PrependReactor("get", "pods", failReadsAfterBind(g))
	if r := g.bindPod(t, "q", "n"); r.Error == "" {
		t.Fatal("bind succeeded")
	}
	if d := cmp.Diff([]int64{50 * gi}, freeMiB(g, "n")); d != "" {
		t.Fatalf("reservation dropped on an unknown outcome: %s", d)
	}
	// A known refusal whose read-back fails keeps the reservation as well.
	h := newFixture(t, gpuNode("n", 1, 80))
	h.addPod(t, gpuPod("q", 30, 1))
	h.failBind = func() error {
		return apierrors.NewConflict(corev1.Resource("pods/binding"), "q", fmt.Errorf("already assigned"))
	}
	h.client.PrependReactor("get", "pods", failReadsAfterBind(h))
	if r := h.bindPod(t, "q", "n"); r.Error == "" {
		t.Fatal("bind succeeded")
	}
	if d := cmp.Diff([]int64{50 * gi}, freeMiB(h, "n")); d != "" {
		t.Fatalf("reservation dropped without reading the pod back: %s", d)
	}
	// The Binding applied but its answer lost: the pod holds the GPUs.
	k := newFixture(t, gpuNode("n", 1, 80))
	k.addPod(t, gpuPod("q", 30, 1))
	k.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if _, obj, err := k.bind(a); err != nil || obj == nil {
			return true, obj, err
		}
		return true, nil, errors.New("http2: timeout awaiting response headers")
	})
	k.client.PrependReactor("get", "pods", failReadsAfterBind(k))
	if r := k.bindPod(t, "q", "n"); r.Error == "" {
		t.Fatal("bind succeeded")
	}
	obj, _ := k.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), "ml", "q")
	if got := obj.(*corev1.Pod).Annotations[api.AnnotationGPUIDs]; got != "GPU-n-0" {
		t.Fatalf("annotation %q", got)
	}
	if d := cmp.Diff([]int64{50 * gi}, freeMiB(k, "n")); d != "" {
		t.Fatalf("reservation dropped on an unknown outcome: %s", d)
	}
}

// failReadsAfterBind fails the reads of pods once a Binding was tried.
func failReadsAfterBind(f *fixture) k8stesting.ReactionFunc {
	return func(k8stesting.Action) (bool, runtime.Object, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.bindings == 0 {
			return false, nil, nil
		}
		return true, nil, errors.New("http2: client connection lost")
	}
}

// TestBindOnePodAtATime: a scheduler that gave up on a slow bind and retried
// gets an error, not a second set of GPUs.
func TestBindOnePodAtATime(t *testing.T) {
	f := newFixture(t, gpuNode("n", 2, 80))
	f.addPod(t, gpuPod("p", 30, 1))
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() { close(entered); <-release })
		return false, nil, nil
	})
	first := make(chan *extenderv1.ExtenderBindingResult)
	go func() { first <- f.bindPod(t, "p", "n") }()
	<-entered
	if r := f.bindPod(t, "p", "n"); !strings.Contains(r.Error, "already in progress") {
		t.Fatalf("second bind: %q", r.Error)
	}
	close(release)
	if r := <-first; r.Error != "" {
		t.Fatalf("first bind: %s", r.Error)
	}
	if d := cmp.Diff([]int64{50 * gi, 80 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatal(d)
	}
}

// TestBindFromFilter: a pod the informer has not delivered yet is bound
// with the copy its filter call carried, no read; a pod replaced since its
// filter (another UID) is read; a bind forgets the filter's copy.
func TestBindFromFilter(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	p := gpuPod("p", 30, 1)
	f.addPod(t, p)
	names := []string{"n"}
	if r := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p, NodeNames: &names}); r.NodeNames == nil || len(*r.NodeNames) != 1 {
		t.Fatalf("filter: %+v", r)
	}
	if _, ok := f.st.Pod("ml", "p"); ok {
		t.Fatal("the state has the pod: the test needs an informer that has not delivered it")
	}
	if r := f.bindPod(t, "p", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if f.gets != 0 || f.bindings != 1 {
		t.Fatalf("%d gets, %d bindings: want the Binding alone", f.gets, f.bindings)
	}
	if _, ok := f.ext.filtered.Load("ml/p"); ok {
		t.Fatal("the filter's copy outlived the bind")
	}

	// Filtered under one UID, replaced by a pod of another before the bind.
	old := gpuPod("q", 10, 1)
	old.UID = "uid-old"
	if r := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: old, NodeNames: &names}); r.NodeNames == nil || len(*r.NodeNames) != 1 {
		t.Fatalf("filter: %+v", r)
	}
	f.addPod(t, gpuPod("q", 10, 1))
	if r := f.bindPod(t, "q", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if f.gets != 1 {
		t.Fatalf("%d gets, want 1 (the filter's copy has another UID)", f.gets)
	}
	// p 30 GiB, q 10, and the replaced pod's hold 10 until it expires.
	if d := cmp.Diff([]int64{30 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatal(d)
	}
}

// TestBindBusy: with every bind slot taken for BindQueueTimeout, a bind is
// refused as busy without an API call, and the GPUs its filter held for
// the pod are free again; the bind holding the slot completes, and the
// refused pod binds on its next try.
func TestBindBusy(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	f.ext = New(Options{Client: f.client, State: f.st, Leader: func() bool { return true },
		MaxConcurrentBinds: 1, BindQueueTimeout: 50 * time.Millisecond})
	p, q := gpuPod("p", 30, 1), gpuPod("q", 20, 1)
	f.addPod(t, p)
	f.addPod(t, q)
	names := []string{"n"}
	if r := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: q, NodeNames: &names}); r.NodeNames == nil || len(*r.NodeNames) != 1 {
		t.Fatalf("filter: %+v", r)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.failBind = func() error {
		once.Do(func() { close(entered); <-release })
		return nil
	}
	done := make(chan *extenderv1.ExtenderBindingResult, 1)
	go func() {
		done <- f.ext.Bind(context.Background(), &extenderv1.ExtenderBindingArgs{PodName: "p", PodNamespace: "ml", PodUID: p.UID, Node: "n"})
	}()
	<-entered // p's Binding is in the API server, its slot taken
	if d := cmp.Diff([]int64{30 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatalf("p reserved and q held: %s", d)
	}
	start := time.Now()
	r := f.bindPod(t, "q", "n")
	if want := "extender busy: 1 binds working for over 50ms; retry later"; r.Error != want {
		t.Fatalf("bind q: %q, want %q", r.Error, want)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("refused after %v, before BindQueueTimeout", waited)
	}
	if d := cmp.Diff([]int64{50 * gi}, freeMiB(f, "n")); d != "" {
		t.Fatalf("q's hold not released: %s", d)
	}
	close(release)
	if r := <-done; r.Error != "" {
		t.Fatalf("bind p: %s", r.Error)
	}
	if r := f.bindPod(t, "q", "n"); r.Error != "" {
		t.Fatalf("bind q again: %s", r.Error)
	}
	if got := f.pod(t, "q").Spec.NodeName; got != "n" {
		t.Fatalf("q on %q", got)
	}
}

// TestFilterWaitsForBinds: while more binds wait for a slot than there are
// slots, a filter call is held (so the scheduler places no pod faster than
// pods are bound), and it goes on once the binds catch up.
func TestFilterWaitsForBinds(t *testing.T) {
	f := newFixture(t, gpuNode("n", 4, 80))
	f.ext = New(Options{Client: f.client, State: f.st, Leader: func() bool { return true },
		MaxConcurrentBinds: 1, BindQueueTimeout: time.Minute, FilterWaitTimeout: time.Minute})
	for _, n := range []string{"a", "b", "c", "d"} {
		f.addPod(t, gpuPod(n, 10, 1))
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.failBind = func() error {
		once.Do(func() { close(entered); <-release })
		return nil
	}
	binds := make(chan string, 3)
	for _, n := range []string{"a", "b", "c"} {
		go func() {
			r := f.ext.Bind(context.Background(), &extenderv1.ExtenderBindingArgs{PodName: n, PodNamespace: "ml", PodUID: types.UID("uid-" + n), Node: "n"})
			binds <- n + ": " + r.Error
		}()
		if n == "a" {
			<-entered // a's Binding holds the one slot
		}
	}
	for deadline := time.Now().Add(10 * time.Second); f.ext.bindWaiting.Load() != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d binds waiting, want 2", f.ext.bindWaiting.Load())
		}
	}
	names := []string{"n"}
	filtered := make(chan *extenderv1.ExtenderFilterResult, 1)
	go func() { filtered <- f.ext.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod("d", 10, 1), NodeNames: &names}) }()
	select {
	case r := <-filtered:
		t.Fatalf("filter answered with two binds waiting for one slot: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if r := <-filtered; r.NodeNames == nil || len(*r.NodeNames) != 1 {
		t.Fatalf("filter after the binds caught up: %+v", r)
	}
	for range 3 {
		if r := <-binds; !strings.HasSuffix(r, ": ") {
			t.Fatalf("bind %s", r)
		}
	}
	if n := testutil.ToFloat64(f.ext.o.Metrics.filterWaits); n != 1 {
		t.Fatalf("filter_waits_total %v, want 1", n)
	}
}

// TestBindAfterUnknownOutcome: after a bind whose outcome is unknown (its
// GPUs stay reserved: the Binding may have landed), the next bind of the
// pod reads it from the API server rather than taking the copy a later
// filter call carried, which cannot show whether the first bind landed.
func TestBindAfterUnknownOutcome(t *testing.T) {
	f := newFixture(t, gpuNode("n", 1, 80))
	p := gpuPod("p", 30, 1)
	f.addPod(t, p)
	f.failBind = func() error { return errors.New("connection reset") } // no answer: outcome unknown
	if r := f.bindPod(t, "p", "n"); r.Error == "" {
		t.Fatal("bind succeeded with the Binding failing")
	}
	if !f.st.BindReserved(p.UID) {
		t.Fatal("no reservation left after a bind of unknown outcome")
	}
	gets := f.gets
	f.failBind = nil
	names := []string{"n"}
	f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p, NodeNames: &names})
	if r := f.bindPod(t, "p", "n"); r.Error != "" {
		t.Fatal(r.Error)
	}
	if f.gets != gets+1 {
		t.Fatalf("%d gets for the second bind, want 1 (not the filter's copy)", f.gets-gets)
	}
}
