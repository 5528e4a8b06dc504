package gpu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/mlplane/mlplane/internal/api"
)

// mockBackend is a mock of our Backend interface (not of NVML).
type mockBackend struct {
	mu   sync.Mutex
	devs []Device
	err  error
}

func (m *mockBackend) Devices() ([]Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	out := make([]Device, len(m.devs))
	copy(out, m.devs)
	return out, nil
}

func (m *mockBackend) Close() error { return nil }

func (m *mockBackend) set(f func(devs []Device)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m.devs)
}

func gpus(n int, mib int64) []Device {
	var devs []Device
	for i := range n {
		devs = append(devs, Device{Index: i, UUID: FakeUUID("n1", i), Model: "M", MemoryMiB: mib, Healthy: true})
	}
	return devs
}

type harness struct {
	t       testing.TB
	client  *fake.Clientset
	clock   *clocktesting.FakeClock
	backend *mockBackend
	agent   *Agent
	reg     *prometheus.Registry
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newHarness(t testing.TB, devs []Device, objs ...runtime.Object) *harness {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-uid-1"}}
	client := fake.NewClientset(append([]runtime.Object{node}, objs...)...)
	h := &harness{t: t, client: client, clock: clocktesting.NewFakeClock(t0), backend: &mockBackend{devs: devs}, reg: prometheus.NewRegistry()}
	a, err := NewAgent(Options{
		NodeName: "n1", Client: clientsetAPI{client}, Backend: h.backend, BackendName: "fake", Clock: h.clock,
		Nodes:      NodeSourceFunc(h.node),
		Registerer: h.reg,
		PodUIDs:    NewProcPodUIDs(t.TempDir()),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.agent = a
	return h
}

// node reads the Node from the fake clientset's tracker: no recorded action,
// as the informer's cache costs no request.
func (h *harness) node() (*corev1.Node, bool) {
	obj, err := h.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("nodes"), "", "n1")
	if err != nil {
		return nil, false
	}
	return obj.(*corev1.Node), true
}

func (h *harness) mustNode() *corev1.Node {
	h.t.Helper()
	n, ok := h.node()
	if !ok {
		h.t.Fatal("node n1 is gone")
	}
	return n
}

// step advances the clock by d and runs one poll; it returns the writes the
// poll made, as "verb resource[/subresource]".
func (h *harness) step(d time.Duration) []string {
	h.t.Helper()
	h.clock.Step(d)
	h.client.ClearActions()
	h.agent.Step(context.Background())
	var writes []string
	for _, a := range h.client.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			w := a.GetVerb() + " " + a.GetResource().Resource
			if a.GetSubresource() != "" {
				w += "/" + a.GetSubresource()
			}
			writes = append(writes, w)
		}
	}
	return writes
}

func (h *harness) published() []api.GPU {
	h.t.Helper()
	inv, err := api.DecodeInventory(h.mustNode().Annotations[api.NodeAnnotationGPUs])
	if err != nil {
		h.t.Fatal(err)
	}
	return inv
}

func (h *harness) capacity() (capacity, allocatable string) {
	n := h.mustNode()
	c, a := n.Status.Capacity[api.ResourceGPUMemory], n.Status.Allocatable[api.ResourceGPUMemory]
	return c.String(), a.String()
}

func wantWrites(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: writes (-want +got):\n%s", what, diff)
	}
}

func TestFirstStepPublishesEverything(t *testing.T) {
	h := newHarness(t, gpus(8, 81920))
	wantWrites(t, "first poll", h.step(0), "patch nodes", "patch nodes/status", "create leases")
	if diff := cmp.Diff(Inventory(gpus(8, 81920)), h.published()); diff != "" {
		t.Errorf("annotation (-want +got):\n%s", diff)
	}
	// 8 * 81920 = 655360
	if c, a := h.capacity(); c != "655360" || a != "655360" {
		t.Errorf("capacity, allocatable = %s, %s; want 655360", c, a)
	}
	if err := h.agent.Ready(); err != nil {
		t.Errorf("Ready() = %v after a complete first poll", err)
	}
	wantWrites(t, "second poll, nothing changed", h.step(time.Second))
}

func TestSteadyStateWritesRarely(t *testing.T) {
	h := newHarness(t, gpus(8, 81920))
	h.step(0)
	var nodeWrites, leaseWrites int
	for i := range 120 { // two minutes at a 1 s poll
		// used memory wanders, but never more than the 1024 MiB threshold
		// away from the published 0
		h.backend.set(func(d []Device) {
			for j := range d {
				d[j].UsedMiB = int64((i * 37 * (j + 1)) % 1000)
			}
		})
		for _, w := range h.step(time.Second) {
			if strings.HasPrefix(w, "patch nodes") {
				nodeWrites++
			} else {
				leaseWrites++
			}
		}
	}
	if nodeWrites != 0 {
		t.Errorf("%d Node writes in 2 minutes of small changes, want 0", nodeWrites)
	}
	// one renewal per 10 s
	if leaseWrites != 12 {
		t.Errorf("%d Lease writes in 2 minutes, want 12", leaseWrites)
	}
}

func TestUsedMemoryRateLimited(t *testing.T) {
	h := newHarness(t, gpus(2, 81920))
	h.step(0) // t=0: first write
	h.backend.set(func(d []Device) { d[0].UsedMiB = 20000 })
	for i := 1; i < 30; i++ {
		if w := h.step(time.Second); len(w) != 0 && w[0] == "patch nodes" {
			t.Fatalf("t=%ds: annotation written %v, want nothing before 30 s", i, w)
		}
	}
	if got := h.published()[0].UsedMiB; got != 0 {
		t.Fatalf("published used = %d before 30 s, want 0", got)
	}
	w := h.step(time.Second) // t=30s
	if len(w) == 0 || w[0] != "patch nodes" {
		t.Fatalf("t=30s: writes %v, want the annotation", w)
	}
	if got := h.published()[0].UsedMiB; got != 20000 {
		t.Errorf("published used = %d, want 20000", got)
	}
	// A move inside the threshold is never written, however long it lasts.
	h.backend.set(func(d []Device) { d[0].UsedMiB = 20000 + 1024 })
	for range 60 {
		if w := h.step(time.Second); len(w) != 0 && w[0] == "patch nodes" {
			t.Fatalf("a move of exactly the threshold was written: %v", w)
		}
	}
	h.backend.set(func(d []Device) { d[0].UsedMiB = 20000 + 1025 })
	if w := h.step(time.Second); len(w) == 0 || w[0] != "patch nodes" {
		t.Errorf("a move past the threshold, 30 s after the last write: writes %v, want the annotation", w)
	}
}

func TestHealthAndMembershipGoOutAtOnce(t *testing.T) {
	h := newHarness(t, gpus(4, 40960))
	h.step(0)
	h.backend.set(func(d []Device) { d[2].Healthy, d[2].Reason = false, "XID 79" })
	wantWrites(t, "GPU 2 unhealthy 1 s after the last write", h.step(time.Second), "patch nodes", "patch nodes/status")
	if h.published()[2].Healthy {
		t.Error("GPU 2 still published healthy")
	}
	// 3 healthy * 40960 = 122880
	if c, a := h.capacity(); c != "122880" || a != "122880" {
		t.Errorf("capacity, allocatable = %s, %s; want 122880", c, a)
	}
	h.backend.mu.Lock()
	h.backend.devs = h.backend.devs[:3] // GPU 3 falls off the bus
	h.backend.mu.Unlock()
	wantWrites(t, "GPU 3 gone", h.step(time.Second), "patch nodes", "patch nodes/status")
	if n := len(h.published()); n != 3 {
		t.Errorf("published %d GPUs, want 3", n)
	}
	// 2 healthy * 40960 = 81920
	if c, _ := h.capacity(); c != "81920" {
		t.Errorf("capacity = %s, want 81920", c)
	}
}

func TestRestoresWhatOthersChange(t *testing.T) {
	h := newHarness(t, gpus(2, 81920))
	h.step(0)
	edit := func(f func(n *corev1.Node)) {
		n := h.mustNode().DeepCopy()
		f(n)
		if err := h.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("nodes"), n, ""); err != nil {
			t.Fatal(err)
		}
	}

	edit(func(n *corev1.Node) { delete(n.Status.Capacity, api.ResourceGPUMemory) }) // a kubelet restart
	wantWrites(t, "capacity cleared", h.step(time.Second), "patch nodes/status")
	if c, a := h.capacity(); c != "163840" || a != "163840" {
		t.Errorf("restored capacity, allocatable = %s, %s; want 163840", c, a)
	}

	edit(func(n *corev1.Node) { n.Status.Allocatable[api.ResourceGPUMemory] = resource.MustParse("1") }) // a hand edit
	wantWrites(t, "allocatable changed", h.step(time.Second), "patch nodes/status")
	if _, a := h.capacity(); a != "163840" {
		t.Errorf("restored allocatable = %s, want 163840", a)
	}

	edit(func(n *corev1.Node) { delete(n.Annotations, api.NodeAnnotationGPUs) })
	wantWrites(t, "annotation removed", h.step(time.Second), "patch nodes")
	edit(func(n *corev1.Node) { n.Annotations[api.NodeAnnotationGPUs] = "garbage" })
	wantWrites(t, "annotation garbled", h.step(time.Second), "patch nodes")
	if n := len(h.published()); n != 2 {
		t.Errorf("restored annotation has %d GPUs, want 2", n)
	}
	wantWrites(t, "all restored", h.step(time.Second))
}

func TestLeaseRenewal(t *testing.T) {
	h := newHarness(t, gpus(1, 81920))
	h.step(0)
	leases := h.client.CoordinationV1().Leases(api.LeaseNamespace)
	get := func() (renew time.Time) {
		t.Helper()
		l, err := leases.Get(context.Background(), api.LeaseName("n1"), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *l.Spec.HolderIdentity != "n1" || *l.Spec.LeaseDurationSeconds != 40 {
			t.Errorf("lease holder %q duration %d, want n1 40", *l.Spec.HolderIdentity, *l.Spec.LeaseDurationSeconds)
		}
		if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].UID != "node-uid-1" {
			t.Errorf("lease owners = %+v, want node n1", l.OwnerReferences)
		}
		return l.Spec.RenewTime.Time
	}
	if r := get(); !r.Equal(t0) {
		t.Errorf("renewTime = %v, want %v", r, t0)
	}
	for i := 1; i < 10; i++ {
		wantWrites(t, "before 10 s", h.step(time.Second))
	}
	wantWrites(t, "at 10 s", h.step(time.Second), "update leases")
	if r := get(); !r.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("renewTime = %v, want t0+10s", r)
	}

	// Someone deletes the Lease: the renewal fails, and the next poll, not
	// the next interval, creates it again.
	if err := leases.Delete(context.Background(), api.LeaseName("n1"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantWrites(t, "lease deleted", h.step(10*time.Second), "update leases")
	wantWrites(t, "next poll", h.step(time.Second), "create leases")
	if r := get(); !r.Equal(t0.Add(21 * time.Second)) {
		t.Errorf("renewTime = %v, want t0+21s", r)
	}
	if got := testutil.ToFloat64(h.agent.metrics.apiWrites.WithLabelValues(writeLease, "error")); got != 1 {
		t.Errorf("lease write errors = %v, want 1", got)
	}
}

func TestBackendErrorMarksEverythingUnhealthy(t *testing.T) {
	h := newHarness(t, gpus(2, 81920))
	h.step(0)
	h.backend.mu.Lock()
	h.backend.err = errors.New("nvmlDeviceGetCount: Unknown Error")
	h.backend.mu.Unlock()
	wantWrites(t, "NVML fails", h.step(time.Second), "patch nodes", "patch nodes/status")
	for _, g := range h.published() {
		if g.Healthy {
			t.Errorf("GPU %s still healthy while NVML fails", g.UUID)
		}
	}
	if c, _ := h.capacity(); c != "0" {
		t.Errorf("capacity = %s, want 0", c)
	}
	if got := testutil.ToFloat64(h.agent.metrics.backendErrors); got != 1 {
		t.Errorf("backend errors = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.agent.metrics.backendUp); got != 0 {
		t.Errorf("backend up = %v, want 0", got)
	}
	h.backend.mu.Lock()
	h.backend.err = nil
	h.backend.mu.Unlock()
	wantWrites(t, "NVML back", h.step(time.Second), "patch nodes", "patch nodes/status")
	if c, _ := h.capacity(); c != "163840" {
		t.Errorf("capacity = %s, want 163840", c)
	}
}

func TestNoNVMLPublishesZeroGPUs(t *testing.T) {
	noLib := func() (Backend, error) {
		return nil, fmt.Errorf("%w: libnvidia-ml.so.1 not found", ErrNoNVML)
	}
	b, name, reason, err := OpenBackend(BackendNVML, "", "n1", noLib, testLogger(t))
	if err != nil {
		t.Fatalf("OpenBackend(nvml) = %v; a node without NVML must not be an error", err)
	}
	defer b.Close()
	if name != BackendNone || !strings.Contains(reason, "libnvidia-ml.so.1 not found") {
		t.Errorf("backend %q, reason %q; want none and the reason", name, reason)
	}
	// Any other failure to open is an error: the agent must not pretend.
	broken := func() (Backend, error) { return nil, errors.New("boom") }
	if _, _, _, err := OpenBackend(BackendNVML, "", "n1", broken, testLogger(t)); err == nil {
		t.Error("an NVML failure other than ErrNoNVML was swallowed")
	}
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	reg := prometheus.NewRegistry()
	a, err := NewAgent(Options{NodeName: "n1", Client: clientsetAPI{client}, Backend: b, BackendName: name, BackendReason: reason,
		Clock: clocktesting.NewFakeClock(t0), Registerer: reg,
		Nodes: NodeSourceFunc(func() (*corev1.Node, bool) {
			n, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
			return n, err == nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	a.Step(context.Background())
	n, _ := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if got := n.Annotations[api.NodeAnnotationGPUs]; got != "[]" {
		t.Errorf("annotation = %q, want []", got)
	}
	if q := n.Status.Capacity[api.ResourceGPUMemory]; q.Value() != 0 || q.String() != "0" {
		t.Errorf("capacity = %s, want 0", q.String())
	}
	if got := testutil.ToFloat64(a.metrics.nvmlAvailable); got != 0 {
		t.Errorf("mlplane_gpu_nvml_available = %v, want 0", got)
	}
	if got := testutil.ToFloat64(a.metrics.backendInfo.WithLabelValues(BackendNone, reason)); got != 1 {
		t.Errorf("backend info{none, reason} = %v, want 1", got)
	}
}

func TestStaleCacheDoesNotCauseRewrites(t *testing.T) {
	h := newHarness(t, gpus(1, 81920))
	stale := h.mustNode().DeepCopy() // no annotation, no capacity
	stale.ResourceVersion = "5"
	var cached *corev1.Node = stale
	h.agent.opts.Nodes = NodeSourceFunc(func() (*corev1.Node, bool) { return cached, true })
	h.client.PrependReactor("patch", "nodes", func(action k8stesting.Action) (bool, runtime.Object, error) {
		// Let the tracker apply the patch, then stamp a newer version on
		// what the API server returns.
		_, obj, err := k8stesting.ObjectReaction(h.client.Tracker())(action)
		if err != nil {
			return true, nil, err
		}
		n := obj.(*corev1.Node)
		n.ResourceVersion = "7"
		return true, n, nil
	})
	wantWrites(t, "first poll", h.step(0), "patch nodes", "patch nodes/status", "create leases")
	// The informer still holds version 5: the agent must trust its own
	// patch (version 7) rather than write again.
	wantWrites(t, "informer behind", h.step(time.Second))
	// Once the informer holds something newer, it is the truth again: here
	// someone removed the annotation in version 9. The patch's answer
	// shows the capacity in place, so only the annotation is written.
	newer := stale.DeepCopy()
	newer.ResourceVersion = "9"
	cached = newer
	wantWrites(t, "informer ahead", h.step(time.Second), "patch nodes")
}

func TestPodMemoryMetric(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "llama", Namespace: "serving", UID: "0b6c1c9a-1111-2222-3333-444455556666"},
		Spec: corev1.PodSpec{NodeName: "n1"}}
	devs := gpus(2, 81920)
	devs[0].Processes = []Process{
		{PID: 10, UsedMiB: 3000, PodUID: string(pod.UID)},
		{PID: 11, UsedMiB: 1000, PodUID: string(pod.UID)},
		{PID: 12, UsedMiB: 500}, // a host process: no cgroup of a pod
	}
	devs[1].Processes = []Process{{PID: 13, UsedMiB: 2048, PodUID: "ffffffff-1111-2222-3333-444455556666"}}
	h := newHarness(t, devs, pod)
	h.step(0)
	// pod 0b6c...: 3000+1000 MiB = 4194304000 bytes; the unknown pod keeps
	// its UID and empty names.
	want := `
mlplane_gpu_pod_memory_used_bytes{gpu="0",namespace="serving",node="n1",pod="llama",pod_uid="0b6c1c9a-1111-2222-3333-444455556666",uuid="` + FakeUUID("n1", 0) + `"} 4.194304e+09
mlplane_gpu_pod_memory_used_bytes{gpu="1",namespace="",node="n1",pod="",pod_uid="ffffffff-1111-2222-3333-444455556666",uuid="` + FakeUUID("n1", 1) + `"} 2.147483648e+09
`
	if diff := cmp.Diff(strings.TrimSpace(want), render(t, h.reg, "mlplane_gpu_pod_memory_used_bytes")); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	// The pod list is not repeated every poll for an unknown UID.
	h.client.ClearActions()
	h.agent.Step(context.Background())
	for _, a := range h.client.Actions() {
		if a.GetVerb() == "list" {
			t.Errorf("pods listed again within the report interval: %v", a)
		}
	}
}

func TestGPUMetrics(t *testing.T) {
	devs := gpus(1, 81920)
	devs[0].UsedMiB, devs[0].UtilizationPercent = 1024, 50
	h := newHarness(t, devs)
	h.step(0)
	uuid := FakeUUID("n1", 0)
	want := `
mlplane_gpu_memory_used_bytes{gpu="0",model="M",node="n1",uuid="` + uuid + `"} 1.073741824e+09
mlplane_gpu_utilization_ratio{gpu="0",model="M",node="n1",uuid="` + uuid + `"} 0.5
mlplane_node_agent_api_writes_total{kind="lease",result="error"} 0
mlplane_node_agent_api_writes_total{kind="lease",result="success"} 1
mlplane_node_agent_api_writes_total{kind="node_annotation",result="error"} 0
mlplane_node_agent_api_writes_total{kind="node_annotation",result="success"} 1
mlplane_node_agent_api_writes_total{kind="node_status",result="error"} 0
mlplane_node_agent_api_writes_total{kind="node_status",result="success"} 1
`
	if diff := cmp.Diff(strings.TrimSpace(want), render(t, h.reg, "mlplane_gpu_memory_used_bytes", "mlplane_gpu_utilization_ratio", "mlplane_node_agent_api_writes_total")); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	// A GPU that disappears stops being reported.
	h.backend.mu.Lock()
	h.backend.devs = nil
	h.backend.mu.Unlock()
	h.step(time.Second)
	if n, err := testutil.GatherAndCount(h.reg, "mlplane_gpu_memory_total_bytes"); err != nil || n != 0 {
		t.Errorf("%d total-memory series (%v) after the GPU left, want 0", n, err)
	}
}

func TestCompareInventory(t *testing.T) {
	base := Inventory(gpus(2, 81920))
	mod := func(f func(g []api.GPU) []api.GPU) []api.GPU {
		c := append([]api.GPU(nil), base...)
		return f(c)
	}
	for _, tc := range []struct {
		name string
		cur  []api.GPU
		ok   bool
		want change
	}{
		{"same", base, true, unchanged},
		{"nothing published", base, false, changed},
		{"used +1024 (= threshold)", mod(func(g []api.GPU) []api.GPU { g[0].UsedMiB = 1024; return g }), true, unchanged},
		{"used +1025", mod(func(g []api.GPU) []api.GPU { g[1].UsedMiB = 1025; return g }), true, usedMoved},
		{"unhealthy", mod(func(g []api.GPU) []api.GPU { g[1].Healthy = false; return g }), true, changed},
		{"gone", base[:1], true, changed},
		{"other uuid", mod(func(g []api.GPU) []api.GPU { g[0].UUID = "GPU-x"; return g }), true, changed},
		{"resized", mod(func(g []api.GPU) []api.GPU { g[0].MemoryMiB = 40960; return g }), true, changed},
	} {
		if got := compareInventory(base, tc.ok, tc.cur, 1024); got != tc.want {
			t.Errorf("%s: compareInventory = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNewAgentRejectsBadOptions(t *testing.T) {
	_, err := NewAgent(Options{PollInterval: -time.Second})
	if err == nil {
		t.Fatal("NewAgent accepted empty options")
	}
	for _, want := range []string{"node name", "client", "backend", "poll interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestHealthy(t *testing.T) {
	h := newHarness(t, gpus(1, 81920))
	h.step(0)
	if err := h.agent.Healthy(); err != nil {
		t.Errorf("Healthy() = %v right after a poll", err)
	}
	h.clock.Step(time.Minute) // no poll for a minute
	if err := h.agent.Healthy(); err == nil {
		t.Error("Healthy() = nil after a minute without a poll")
	}
}

func testLogger(t *testing.T) logr.Logger { return testr.New(t) }

// render writes the series of the named families in the Prometheus text
// format (testutil.GatherAndFormat), without the # HELP and # TYPE lines:
// `name{labels} value`, labels sorted as the registry sorts them.
func render(t *testing.T, g prometheus.Gatherer, names ...string) string {
	t.Helper()
	b, err := testutil.GatherAndFormat(g, expfmt.TypeTextPlain, names...)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// clientsetAPI adapts client-go's (fake) clientset to API, so that tests
// count the same requests the REST client would send.
type clientsetAPI struct{ kubernetes.Interface }

// IsWatchListSemanticsUnSupported tells the reflector that the fake
// clientset cannot stream a watch list.
func (c clientsetAPI) IsWatchListSemanticsUnSupported() bool { return true }

func (c clientsetAPI) ListNodes(ctx context.Context, o metav1.ListOptions) (*corev1.NodeList, error) {
	return c.CoreV1().Nodes().List(ctx, o)
}

func (c clientsetAPI) WatchNodes(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return c.CoreV1().Nodes().Watch(ctx, o)
}

func (c clientsetAPI) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, sub ...string) (*corev1.Node, error) {
	return c.CoreV1().Nodes().Patch(ctx, name, pt, data, metav1.PatchOptions{FieldManager: api.FieldManager}, sub...)
}

func (c clientsetAPI) ListPods(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
	return c.CoreV1().Pods("").List(ctx, o)
}

func (c clientsetAPI) GetLease(ctx context.Context, ns, name string) (*coordinationv1.Lease, error) {
	return c.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
}

func (c clientsetAPI) CreateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.CoordinationV1().Leases(l.Namespace).Create(ctx, l, metav1.CreateOptions{FieldManager: api.FieldManager})
}

func (c clientsetAPI) UpdateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.CoordinationV1().Leases(l.Namespace).Update(ctx, l, metav1.UpdateOptions{FieldManager: api.FieldManager})
}

// BenchmarkStepSteadyState is one poll of an 8-GPU node whose inventory has
// not changed: what the agent spends every second.
func BenchmarkStepSteadyState(b *testing.B) {
	h := newHarness(b, gpus(8, 81920))
	h.agent.Step(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		h.agent.Step(context.Background())
	}
}

// TestRunWithInformer runs the agent as main does, its own Node coming from
// the watch, against the fake clientset.
func TestRunWithInformer(t *testing.T) {
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "other"}})
	a, err := NewAgent(Options{NodeName: "n1", Client: clientsetAPI{client}, Backend: &mockBackend{devs: gpus(2, 81920)},
		Clock: clocktesting.NewFakeClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for a.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("agent not ready after 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
	n, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if inv, err := api.DecodeInventory(n.Annotations[api.NodeAnnotationGPUs]); err != nil || len(inv) != 2 {
		t.Errorf("published %v, %v; want 2 GPUs", inv, err)
	}
	other, _ := client.CoreV1().Nodes().Get(context.Background(), "other", metav1.GetOptions{})
	if _, ok := other.Annotations[api.NodeAnnotationGPUs]; ok {
		t.Error("the agent wrote to another node")
	}
}

func TestBacksOffWhileTheAPIFails(t *testing.T) {
	h := newHarness(t, gpus(1, 81920))
	failing := true
	h.client.PrependReactor("*", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if failing && action.GetVerb() != "get" && action.GetVerb() != "list" {
			return true, nil, errors.New("API server unavailable")
		}
		return false, nil, nil
	})
	var nodeAttempts, leaseAttempts []int
	for s := 0; s <= 20; s++ {
		d := time.Second
		if s == 0 {
			d = 0
		}
		for _, w := range h.step(d) {
			if w == "patch nodes" {
				nodeAttempts = append(nodeAttempts, s)
			}
			if strings.HasSuffix(w, "leases") {
				leaseAttempts = append(leaseAttempts, s)
			}
		}
	}
	// retries 1, 2, 4, 8 s apart
	want := []int{0, 1, 3, 7, 15}
	if diff := cmp.Diff(want, nodeAttempts); diff != "" {
		t.Errorf("Node write attempts at seconds (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, leaseAttempts); diff != "" {
		t.Errorf("Lease write attempts at seconds (-want +got):\n%s", diff)
	}
	if h.agent.Ready() == nil {
		t.Error("ready although nothing was ever published")
	}
	failing = false
	h.step(11 * time.Second) // t=31: the next retry (15+16) succeeds
	if len(h.published()) != 1 {
		t.Error("not published once the API server is back")
	}
	wantWrites(t, "after recovery", h.step(time.Second))
}

// TestOutsideUsedMemory: the inventory says how much of each GPU's used
// memory no pod's processes explain (issue 16 item 3), and leaves it out
// where the backend could not list the processes.
func TestOutsideUsedMemory(t *testing.T) {
	devs := gpus(3, 81920)
	devs[0].UsedMiB, devs[0].ProcessesKnown = 14500, true
	devs[0].Processes = []Process{
		{PID: 10, UsedMiB: 4000, PodUID: "0b6c1c9a-1111-2222-3333-444455556666"},
		{PID: 12, UsedMiB: 10000}, // a host process: no cgroup of a pod
	}
	devs[1].UsedMiB, devs[1].ProcessesKnown = 0, true
	devs[2].UsedMiB = 7000 // processes not listable
	h := newHarness(t, devs)
	h.step(0)
	inv := h.published()
	var got []string
	for _, g := range inv {
		if g.OutsideUsedMiB == nil {
			got = append(got, "unknown")
		} else {
			got = append(got, strconv.FormatInt(*g.OutsideUsedMiB, 10))
		}
	}
	// GPU 0: 14500 used - 4000 of the pod = 10500 (the host process and
	// 500 MiB of the driver's own).
	if want := []string{"10500", "0", "unknown"}; !slices.Equal(got, want) {
		t.Fatalf("outsideUsedMiB = %v, want %v", got, want)
	}
	// A change above the threshold is published like used memory; a
	// change of whether it is known at once.
	h.backend.devs[2].ProcessesKnown = true
	if writes := h.step(time.Second); len(writes) == 0 {
		t.Fatal("outsideUsedMiB becoming known was not published")
	}
	if g := h.published()[2]; g.OutsideUsedMiB == nil || *g.OutsideUsedMiB != 7000 {
		t.Fatalf("GPU 2: %+v", g)
	}
}

func (c clientsetAPI) CreateEvent(ctx context.Context, e *corev1.Event) error {
	_, err := c.CoreV1().Events(e.Namespace).Create(ctx, e, metav1.CreateOptions{})
	return err
}

func (c clientsetAPI) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	return c.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
}

func (c clientsetAPI) EvictPod(ctx context.Context, ns, name string, uid types.UID) error {
	return c.PolicyV1().Evictions(ns).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}})
}

// overPod is a pod on n1 that booked 20 GiB per GPU.
func overPod(ns string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "llama", Namespace: ns, UID: "0b6c1c9a-1111-2222-3333-444455556666",
		Annotations: map[string]string{api.AnnotationGPUMemory: "20Gi"}}, Spec: corev1.PodSpec{NodeName: "n1"}}
}

// events lists the events recorded in ns as "reason: message".
func (h *harness) events(ns string) []string {
	h.t.Helper()
	list, err := h.client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind != "Pod" || e.Type != corev1.EventTypeWarning || e.Source.Component != "mlplane-node-agent" {
			h.t.Errorf("event %+v", e)
		}
		out = append(out, e.Reason+": "+e.Message)
	}
	slices.Sort(out)
	return out
}

// TestPodMetricsBookedAndUtilization: the per-pod series carry the booking
// and the utilisation, from per-process samples where the backend has them
// and from the memory share where it does not (issue 17).
func TestPodMetricsBookedAndUtilization(t *testing.T) {
	pod := overPod("serving")
	devs := gpus(2, 81920)
	devs[0].ProcessUtilizationKnown = true
	devs[0].Processes = []Process{
		{PID: 10, UsedMiB: 3000, PodUID: string(pod.UID), UtilizationPercent: 30},
		{PID: 11, UsedMiB: 1000, PodUID: string(pod.UID), UtilizationPercent: 15},
	}
	devs[1].UtilizationPercent = 80 // no per-process samples: split 3:1 by memory
	devs[1].Processes = []Process{{PID: 12, UsedMiB: 3072, PodUID: string(pod.UID)}, {PID: 13, UsedMiB: 1024, PodUID: "ffffffff-1111-2222-3333-444455556666"}}
	h := newHarness(t, devs, pod)
	h.step(0)
	u0, u1 := FakeUUID("n1", 0), FakeUUID("n1", 1)
	want := `
mlplane_gpu_pod_utilization_ratio{gpu="0",namespace="serving",node="n1",pod="llama",pod_uid="0b6c1c9a-1111-2222-3333-444455556666",source="process",uuid="` + u0 + `"} 0.45
mlplane_gpu_pod_utilization_ratio{gpu="1",namespace="",node="n1",pod="",pod_uid="ffffffff-1111-2222-3333-444455556666",source="memory_share",uuid="` + u1 + `"} 0.2
mlplane_gpu_pod_utilization_ratio{gpu="1",namespace="serving",node="n1",pod="llama",pod_uid="0b6c1c9a-1111-2222-3333-444455556666",source="memory_share",uuid="` + u1 + `"} 0.6
`
	if diff := cmp.Diff(strings.TrimSpace(want), render(t, h.reg, "mlplane_gpu_pod_utilization_ratio")); diff != "" {
		t.Errorf("utilization (-want +got):\n%s", diff)
	}
	// 20Gi booked = 21474836480 bytes; the unknown pod booked nothing.
	want = `
mlplane_gpu_pod_memory_booked_bytes{gpu="0",namespace="serving",node="n1",pod="llama",pod_uid="0b6c1c9a-1111-2222-3333-444455556666",uuid="` + u0 + `"} 2.147483648e+10
mlplane_gpu_pod_memory_booked_bytes{gpu="1",namespace="",node="n1",pod="",pod_uid="ffffffff-1111-2222-3333-444455556666",uuid="` + u1 + `"} 0
mlplane_gpu_pod_memory_booked_bytes{gpu="1",namespace="serving",node="n1",pod="llama",pod_uid="0b6c1c9a-1111-2222-3333-444455556666",uuid="` + u1 + `"} 2.147483648e+10
`
	if diff := cmp.Diff(strings.TrimSpace(want), render(t, h.reg, "mlplane_gpu_pod_memory_booked_bytes")); diff != "" {
		t.Errorf("booked (-want +got):\n%s", diff)
	}
	// The pod that booked nothing is over-booked by all it uses.
	if g := h.published()[1]; g.OverBookedMiB != 1024 {
		t.Errorf("GPU 1 overBookedMiB = %d, want 1024", g.OverBookedMiB)
	}
}

// TestOverBudget: a pod over its booking by more than the tolerance for
// longer than OverBudgetAfter gets one Warning event and the metric; the
// inventory carries the excess at once; with eviction on and the namespace
// opted in it is evicted, and a refusal (a PodDisruptionBudget) is
// reported and retried (issue 17 part 2).
func TestOverBudget(t *testing.T) {
	pod := overPod("serving")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "serving"}}
	devs := gpus(1, 81920)
	devs[0].ProcessesKnown = true
	devs[0].UsedMiB = 20480 + 400
	devs[0].Processes = []Process{{PID: 10, UsedMiB: 20480 + 400, PodUID: string(pod.UID)}}
	h := newHarness(t, devs, pod, ns)
	h.agent.opts.EvictOverBudget = true
	var evictions int
	refuse := true
	h.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		evictions++
		if refuse {
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
		}
		return true, nil, nil
	})
	h.step(0)
	// Within the tolerance: 400 MiB over, counted in the inventory, no event.
	if g := h.published()[0]; g.OverBookedMiB != 400 {
		t.Fatalf("overBookedMiB = %d, want 400", g.OverBookedMiB)
	}
	h.backend.set(func(d []Device) { d[0].UsedMiB, d[0].Processes[0].UsedMiB = 24576, 24576 })
	h.step(10 * time.Second)
	if ev := h.events("serving"); len(ev) != 0 {
		t.Fatalf("event before the grace: %v", ev)
	}
	if g := h.published()[0]; g.OverBookedMiB != 4096 {
		t.Fatalf("overBookedMiB = %d, want 4096 (published at once: it moved from 400 past the threshold)", g.OverBookedMiB)
	}
	// Over for 30 s: a Warning, but no eviction, the namespace has not opted in.
	h.step(30 * time.Second)
	want := []string{"GPUMemoryOverBudget: pod uses 24576 MiB of GPU memory on " + FakeUUID("n1", 0) + " (GPU 0), more than the 20480 MiB it booked (tolerance 512 MiB), for 30s"}
	if diff := cmp.Diff(want, h.events("serving")); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if !strings.Contains(render(t, h.reg, "mlplane_gpu_pod_over_budget"), `uuid="`+FakeUUID("n1", 0)+`"} 1`) {
		t.Fatalf("metric: %s", render(t, h.reg, "mlplane_gpu_pod_over_budget"))
	}
	if evictions != 0 {
		t.Fatalf("evicted %d times without the namespace's opt-in", evictions)
	}
	// Opted in: the eviction is refused (PDB), reported, and retried only
	// after OverBudgetAfter.
	ns.Labels = map[string]string{api.LabelEvictOverBudget: "true"}
	if _, err := h.client.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.step(time.Second)
	h.step(time.Second)
	if evictions != 1 {
		t.Fatalf("%d eviction attempts, want 1", evictions)
	}
	ev := h.events("serving")
	if len(ev) != 2 || !strings.HasPrefix(ev[1], "GPUMemoryOverBudgetEvictionRefused: eviction refused (Cannot evict pod as it would violate the pod's disruption budget.); retrying in 30s") {
		t.Fatalf("events %q", ev)
	}
	refuse = false
	h.step(30 * time.Second)
	if evictions != 2 {
		t.Fatalf("%d eviction attempts, want 2", evictions)
	}
	if ev := h.events("serving"); len(ev) != 3 || !strings.HasPrefix(ev[1], "GPUMemoryOverBudgetEvicted: evicted by the mlplane node agent: pod uses 24576 MiB") {
		t.Fatalf("events %q", ev)
	}
	// Back under budget: the episode ends; the metric is 0.
	h.backend.set(func(d []Device) { d[0].UsedMiB, d[0].Processes[0].UsedMiB = 20000, 20000 })
	h.step(time.Second)
	if !strings.Contains(render(t, h.reg, "mlplane_gpu_pod_over_budget"), `uuid="`+FakeUUID("n1", 0)+`"} 0`) {
		t.Fatalf("metric after: %s", render(t, h.reg, "mlplane_gpu_pod_over_budget"))
	}
}

// TestPublishesMetricsEndpoint: the agent says on its Node where to scrape
// it, and puts it back when someone removes it.
func TestPublishesMetricsEndpoint(t *testing.T) {
	h := newHarness(t, gpus(1, 81920))
	h.agent.opts.MetricsEndpoint = "10.0.0.7:8080"
	h.step(0)
	if got := h.mustNode().Annotations[api.NodeAnnotationAgentMetrics]; got != "10.0.0.7:8080" {
		t.Fatalf("annotation = %q", got)
	}
	if w := h.step(time.Second); len(w) != 0 {
		t.Fatalf("steady state wrote %v", w)
	}
	patch := []byte(`{"metadata":{"annotations":{"` + api.NodeAnnotationAgentMetrics + `":null}}}`)
	if _, err := h.client.CoreV1().Nodes().Patch(context.Background(), "n1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	h.step(time.Second)
	if got := h.mustNode().Annotations[api.NodeAnnotationAgentMetrics]; got != "10.0.0.7:8080" {
		t.Fatalf("annotation after removal = %q", got)
	}
}
