package score

import (
	"fmt"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlplane/mlplane/internal/api"
)

const gi = 1024 // MiB

func TestScorers(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		req, used, cap           int64
		most, least, fragmenting float64
	}{
		// (40960+20480)/81920 = 0.75 -> 7.5; least: (81920-40960-20480)/81920 -> 2.5
		{"half used gpu", 20 * gi, 40 * gi, 80 * gi, 7.5, 2.5, 2.5},
		// empty: 20/80 = 2.5; least: 60/80 = 7.5
		{"empty gpu", 20 * gi, 0, 80 * gi, 2.5, 7.5, 7.5},
		// exact fit: 80/80 = 10; least: 0
		{"exact fit", 40 * gi, 40 * gi, 80 * gi, 10, 0, 0},
		// overfull clamps to 10 and 0
		{"over", 60 * gi, 40 * gi, 80 * gi, 10, 0, 0},
		{"no capacity", 1, 0, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MostAllocated(tc.req, tc.used, tc.cap); got != tc.most {
				t.Errorf("MostAllocated = %v, want %v", got, tc.most)
			}
			if got := LeastAllocated(tc.req, tc.used, tc.cap); got != tc.least {
				t.Errorf("LeastAllocated = %v, want %v", got, tc.least)
			}
			if got := FragmentationScore(tc.req+tc.used, tc.cap); got != tc.fragmenting {
				t.Errorf("FragmentationScore = %v, want %v", got, tc.fragmenting)
			}
		})
	}
}

// inv is an inventory of GPUs of the given sizes in GiB, named PREFIX-i.
func inv(prefix string, sizesGi ...int64) []api.GPU {
	out := make([]api.GPU, len(sizesGi))
	for i, s := range sizesGi {
		out[i] = api.GPU{Index: i, UUID: fmt.Sprintf("%s-%d", prefix, i), Model: "H100", MemoryMiB: s * gi, Healthy: true}
	}
	return out
}

func newCluster(nodes map[string][]api.GPU) *Cluster {
	c := NewCluster()
	for name, g := range nodes {
		c.SetNode(name, g, "")
		c.SetLease(name, NeverExpires)
	}
	return c
}

func facts(t *testing.T, c *Cluster, p *PlacementPolicy, pod Pod) *Facts {
	t.Helper()
	pl, err := NewPlacer(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := pl.Facts(c, pod)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFit(t *testing.T) {
	c := newCluster(map[string][]api.GPU{"a": inv("a", 80, 80), "small": inv("s", 24, 24)})
	c.Assign("p1", Assignment{GPUs: []string{"a-0"}, MemoryMiB: 68 * gi}) // a-0: 12 GiB free
	c.Assign("p2", Assignment{GPUs: []string{"a-1"}, MemoryMiB: 60 * gi}) // a-1: 20 GiB free
	bad := inv("b", 80)
	c.SetNode("broken", bad, "annotation mlplane.io/gpus: invalid JSON")
	c.SetLease("broken", NeverExpires)
	c.SetNode("nolease", inv("n", 80), "")
	c.SetNode("stale", inv("st", 80), "")
	c.SetLease("stale", 100*1e9)
	sick := inv("sick", 80, 80)
	sick[1].Healthy = false
	c.SetNode("sick", sick, "")
	c.SetLease("sick", NeverExpires)
	now := int64(112 * 1e9)

	for _, tc := range []struct {
		node      string
		mem       int64
		count     int
		ok        bool
		code, msg string
	}{
		{"a", 20 * gi, 1, true, "", ""},
		// largest free is a-1: 81920-61440 = 20480 MiB, short of 21504.
		{"a", 21 * gi, 1, false, ReasonInsufficient, "largest free GPU has 20480 MiB, pod needs 21504 MiB per GPU on 1 GPU"},
		{"a", 12 * gi, 2, true, "", ""},
		// free: 20480 and 12288; only one has 16384.
		{"a", 16 * gi, 2, false, ReasonInsufficient, "1 GPU with at least 16384 MiB free, pod needs 16384 MiB per GPU on 2 GPUs (free per GPU: 20480, 12288 MiB)"},
		{"a", 1 * gi, 3, false, ReasonTooFewGPUs, "node has 2 healthy GPUs, pod needs 3"},
		{"small", 40 * gi, 1, false, ReasonGPUTooSmall, "largest GPU has 24576 MiB, pod needs 40960 MiB per GPU on 1 GPU"},
		{"missing", 1 * gi, 1, false, ReasonUnknownNode, "node has no GPU inventory (no mlplane.io/gpus annotation seen)"},
		{"broken", 1 * gi, 1, false, ReasonNoInventory, "annotation mlplane.io/gpus: invalid JSON"},
		{"nolease", 1 * gi, 1, false, ReasonAgentDown, "node agent Lease mlplane-system/mlplane-gpu-nolease not found"},
		{"stale", 1 * gi, 1, false, ReasonAgentDown, "node agent Lease mlplane-system/mlplane-gpu-stale expired 12s ago"},
		// the unhealthy GPU does not count
		{"sick", 1 * gi, 2, false, ReasonTooFewGPUs, "node has 1 healthy GPUs, pod needs 2"},
	} {
		t.Run(fmt.Sprintf("%s/%dx%d", tc.node, tc.count, tc.mem), func(t *testing.T) {
			f := facts(t, c, DefaultPolicy(), Pod{Key: "new", Request: api.GPURequest{MemoryMiB: tc.mem, Count: tc.count}})
			ok, r := f.Fit(tc.node, c.Node(tc.node), now)
			if ok != tc.ok || r.Code != tc.code || r.Message != tc.msg {
				t.Fatalf("Fit = %v %+v, want %v %s %q", ok, r, tc.ok, tc.code, tc.msg)
			}
			if r.Resolvable != (tc.code == ReasonInsufficient) {
				t.Fatalf("Resolvable = %v for %s", r.Resolvable, tc.code)
			}
		})
	}
}

func TestUnexplainedMemory(t *testing.T) {
	g := inv("a", 80)
	g[0].UsedMiB = 30 * gi // 30 GiB seen in use
	c := newCluster(map[string][]api.GPU{"a": g})
	c.Assign("p", Assignment{GPUs: []string{"a-0"}, MemoryMiB: 20 * gi})
	// assigned 20, used 30: 10 unexplained; free = 80-20-10 = 50 GiB.
	if got := c.Node("a").GPUs[0].FreeMiB(); got != 50*gi {
		t.Fatalf("free = %d, want %d", got, 50*gi)
	}
	c.Unassign("p")
	// nothing assigned: all 30 unexplained; free = 50 GiB still.
	if got := c.Node("a").LargestFreeMiB(); got != 50*gi {
		t.Fatalf("free = %d, want %d", got, 50*gi)
	}
	c.Assign("q", Assignment{GPUs: []string{"a-0"}, MemoryMiB: 40 * gi})
	// assigned 40 explains all 30 used; free = 80-40 = 40 GiB.
	if got := c.Node("a").LargestFreeMiB(); got != 40*gi {
		t.Fatalf("free = %d, want %d", got, 40*gi)
	}
}

func TestAssignBeforeNode(t *testing.T) {
	c := NewCluster()
	c.Assign("p", Assignment{Node: "a", GPUs: []string{"a-0"}, MemoryMiB: 30 * gi})
	c.SetNode("a", inv("a", 80), "")
	// 80-30 = 50 GiB
	if got := c.Node("a").LargestFreeMiB(); got != 50*gi {
		t.Fatalf("free = %d, want %d", got, 50*gi)
	}
	// Replacing the inventory keeps assignments.
	c.SetNode("a", inv("a", 80, 80), "")
	if got := c.Node("a").GPUs[0].FreeMiB(); got != 50*gi {
		t.Fatalf("free after re-inventory = %d", got)
	}
	c.DeleteNode("a")
	c.SetNode("a", inv("a", 80), "")
	if got := c.Node("a").LargestFreeMiB(); got != 50*gi {
		t.Fatalf("free after delete/add = %d", got)
	}
	c.Assign("p", Assignment{Node: "a", GPUs: []string{"a-0"}, MemoryMiB: 10 * gi}) // replaces
	if got := c.Node("a").LargestFreeMiB(); got != 70*gi {
		t.Fatalf("free after replace = %d", got)
	}
}

func TestPick(t *testing.T) {
	// GPU free: 0: 80, 1: 20, 2: 50, 3: 20
	c := newCluster(map[string][]api.GPU{"n": inv("n", 80, 80, 80, 80)})
	c.Assign("x", Assignment{GPUs: []string{"n-1", "n-3"}, MemoryMiB: 60 * gi})
	c.Assign("y", Assignment{GPUs: []string{"n-2"}, MemoryMiB: 30 * gi})
	spread := DefaultPolicy()
	spread.GPUStrategy, spread.MultiGPU.GPUStrategy = Spread, Spread
	for _, tc := range []struct {
		name  string
		p     *PlacementPolicy
		ovr   string
		mem   int64
		count int
		want  []string
	}{
		{"binpack best fit", DefaultPolicy(), "", 20 * gi, 1, []string{"n-1"}},
		{"binpack next size", DefaultPolicy(), "", 21 * gi, 1, []string{"n-2"}},
		{"binpack two", DefaultPolicy(), "", 10 * gi, 2, []string{"n-1", "n-3"}},
		{"spread", spread, "", 10 * gi, 1, []string{"n-0"}},
		{"spread two", spread, "", 10 * gi, 2, []string{"n-0", "n-2"}},
		{"pod override", DefaultPolicy(), Spread, 10 * gi, 1, []string{"n-0"}},
		{"too big", DefaultPolicy(), "", 81 * gi, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := facts(t, c, tc.p, Pod{Request: api.GPURequest{MemoryMiB: tc.mem, Count: tc.count}, Override: tc.ovr})
			if d := cmp.Diff(tc.want, f.Pick(c.Node("n"))); d != "" {
				t.Fatalf("Pick (-want +got):\n%s", d)
			}
		})
	}
}

func TestOwnAssignmentIsFree(t *testing.T) {
	c := newCluster(map[string][]api.GPU{"n": inv("n", 80)})
	c.Assign("me", Assignment{GPUs: []string{"n-0"}, MemoryMiB: 60 * gi})
	// To another pod only 20 GiB are free; to "me" (a retried bind) all 80.
	other := facts(t, c, DefaultPolicy(), Pod{Key: "other", Request: api.GPURequest{MemoryMiB: 60 * gi, Count: 1}})
	if ok, _ := other.Fit("n", c.Node("n"), 0); ok {
		t.Fatal("other pod fits a GPU held by me")
	}
	me := facts(t, c, DefaultPolicy(), Pod{Key: "me", Request: api.GPURequest{MemoryMiB: 60 * gi, Count: 1}})
	if ok, r := me.Fit("n", c.Node("n"), 0); !ok {
		t.Fatalf("me does not fit my own GPU: %s", r.Message)
	}
	if d := cmp.Diff([]string{"n-0"}, me.Pick(c.Node("n"))); d != "" {
		t.Fatal(d)
	}
	// The shared node is untouched by the view.
	if got := c.Node("n").LargestFreeMiB(); got != 20*gi {
		t.Fatalf("node free changed to %d", got)
	}
}

func TestScore(t *testing.T) {
	// partial: one GPU with 40 GiB assigned, one empty; empty: two empty GPUs;
	// full: one GPU with 70 GiB assigned (a 20 GiB pod does not fit it), one empty.
	c := newCluster(map[string][]api.GPU{
		"partial": inv("p", 80, 80),
		"empty":   inv("e", 80, 80),
		"full":    inv("f", 80, 80),
	})
	c.Assign("a", Assignment{GPUs: []string{"p-0"}, MemoryMiB: 40 * gi})
	c.Assign("b", Assignment{GPUs: []string{"f-0"}, MemoryMiB: 70 * gi})
	p := DefaultPolicy() // node 1, gpu 2, protect 3
	f := facts(t, c, p, Pod{Request: api.GPURequest{MemoryMiB: 20 * gi, Count: 1}})
	for _, tc := range []struct {
		node string
		want float64
	}{
		// node: (40+20)/160 = 3.75; gpu p-0: (40+20)/80 = 7.5 -> 2*7.5 = 15; no empty GPU broken.
		{"partial", 3.75 + 15},
		// node: 20/160 = 1.25; gpu: 20/80 = 2.5 -> 5; breaks 1 of 1 empty: -3*10.
		{"empty", 1.25 + 5 - 30},
		// node: (70+20)/160 = 5.625; gpu f-1: 2.5 -> 5; breaks an empty GPU: -30.
		{"full", 5.625 + 5 - 30},
	} {
		if got := f.Score(c.Node(tc.node)); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Score(%s) = %v, want %v", tc.node, got, tc.want)
		}
	}
	// Spread turns it around and ignores the protection weight.
	s := facts(t, c, p, Pod{Request: api.GPURequest{MemoryMiB: 20 * gi, Count: 1}, Override: Spread})
	// node: (160-20)/160 = 8.75; gpu e-0: (80-20)/80 = 7.5 -> 15.
	if got := s.Score(c.Node("empty")); math.Abs(got-(8.75+15)) > 1e-9 {
		t.Errorf("spread Score(empty) = %v, want %v", got, 8.75+15)
	}
	// Multi-GPU pods add the fragmentation score.
	m := facts(t, c, p, Pod{Request: api.GPURequest{MemoryMiB: 40 * gi, Count: 2}})
	// partial: picks p-0 (40 free, fills it) and p-1 (leaves 40 stranded).
	// node: (40+80)/160 = 7.5; gpu: (10 + 5)/2 = 7.5 -> 15; broken 1 of 2: -3*10/2 = -15;
	// fragmentation: (160-40)/160 = 7.5.
	if got := m.Score(c.Node("partial")); math.Abs(got-(7.5+15-15+7.5)) > 1e-9 {
		t.Errorf("multi Score(partial) = %v, want %v", got, 7.5+15-15+7.5)
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		raw  []float64
		want []int64
	}{
		{nil, []int64{}},
		{[]float64{3, 3}, []int64{10, 10}},
		// (x-(-30))/(18.75+30)*9: -25.6 -> 0.81 -> 0; -30 -> 0; 10 -> 7.38 -> 7
		{[]float64{18.75, -25.625, -30, 10}, []int64{10, 0, 0, 7}},
		// near-best nodes never tie with the best: 18.74 -> 8.99 -> 8
		{[]float64{18.75, 18.74, 9.75}, []int64{10, 8, 0}},
	} {
		if d := cmp.Diff(tc.want, Normalize(tc.raw)); d != "" {
			t.Errorf("Normalize(%v) (-want +got):\n%s", tc.raw, d)
		}
	}
}

func TestPodRequest(t *testing.T) {
	res := func(q string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Requests: corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse(q)}}
	}
	annotated := func(mem string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{api.AnnotationGPUMemory: mem}}}
	}
	for _, tc := range []struct {
		name    string
		pod     corev1.Pod
		want    api.GPURequest
		ok      bool
		wantErr string
	}{
		{name: "plain pod"},
		{name: "annotations win",
			pod:  corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{api.AnnotationGPUMemory: "20Gi", api.AnnotationGPUCount: "2"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: res("40960")}}}},
			want: api.GPURequest{MemoryMiB: 20480, Count: 2}, ok: true},
		// 16384 + 4096 = 20480 MiB on one GPU
		{name: "resource only is one GPU of the sum",
			pod:  corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: res("16384")}, {Resources: res("4096")}}}},
			want: api.GPURequest{MemoryMiB: 20480, Count: 1}, ok: true},
		// Init containers, as Kubernetes counts them (issue 16 item 2).
		{name: "init container alone",
			pod:  corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Resources: res("20480")}}, Containers: []corev1.Container{{}}}},
			want: api.GPURequest{MemoryMiB: 20480, Count: 1}, ok: true},
		// max(init 30720, main 20480) = 30720
		{name: "init container above the main containers",
			pod:  corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Resources: res("30720")}}, Containers: []corev1.Container{{Resources: res("20480")}}}},
			want: api.GPURequest{MemoryMiB: 30720, Count: 1}, ok: true},
		// max(init 8192, main 20480) = 20480: init containers run one at a time, before the main ones
		{name: "init container below the main containers",
			pod:  corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Resources: res("8192")}, {Resources: res("4096")}}, Containers: []corev1.Container{{Resources: res("20480")}}}},
			want: api.GPURequest{MemoryMiB: 20480, Count: 1}, ok: true},
		// sidecar 4096 + main 16384 = 20480; the init container after the sidecar: 18432 + 4096 = 22528
		{name: "init container after a sidecar adds to it",
			pod: corev1.Pod{Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Resources: res("4096"), RestartPolicy: new(corev1.ContainerRestartPolicyAlways)}, {Resources: res("18432")}},
				Containers:     []corev1.Container{{Resources: res("16384")}}}},
			want: api.GPURequest{MemoryMiB: 22528, Count: 1}, ok: true},
		// the init container before the sidecar runs alone: max(18432, 4096 + 16384 = 20480) = 20480
		{name: "init container before a sidecar",
			pod: corev1.Pod{Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Resources: res("18432")}, {Resources: res("4096"), RestartPolicy: new(corev1.ContainerRestartPolicyAlways)}},
				Containers:     []corev1.Container{{Resources: res("16384")}}}},
			want: api.GPURequest{MemoryMiB: 20480, Count: 1}, ok: true},
		{name: "init container with a limit only",
			pod: corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse("12288")}}}}, Containers: []corev1.Container{{}}}},
			want: api.GPURequest{MemoryMiB: 12288, Count: 1}, ok: true},
		// the annotations still win over what the init containers ask
		{name: "annotations win over init containers",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{api.AnnotationGPUMemory: "10Gi"}},
				Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Resources: res("40960")}}, Containers: []corev1.Container{{Resources: res("10240")}}}},
			want: api.GPURequest{MemoryMiB: 10240, Count: 1}, ok: true},
		// 1048576 MiB in an init container is still one GPU's worth; one more is not
		{name: "init container above one GPU",
			pod:     corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Resources: res("1048577")}}, Containers: []corev1.Container{{}}}},
			wantErr: "resource mlplane.io/gpu-memory: the containers ask for more than one GPU can have (at most 1048576 MiB)"},
		// 2^20 MiB is the bound: 524288 + 524288 = 1048576 fits.
		{name: "resource at the bound",
			pod:  corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: res("524288")}, {Resources: res("524288")}}}},
			want: api.GPURequest{MemoryMiB: 1 << 20, Count: 1}, ok: true},
		// 8Ei MiB: far beyond int64 bytes, and beyond one GPU.
		{name: "resource above one GPU",
			pod:     corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: res("8Ei")}}}},
			wantErr: "resource mlplane.io/gpu-memory: the containers ask for more than one GPU can have (at most 1048576 MiB)"},
		// 1048576 + 1 MiB: one MiB over.
		{name: "resource sum above one GPU",
			pod:     corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: res("1048576")}, {Resources: res("1")}}}},
			wantErr: "resource mlplane.io/gpu-memory: the containers ask for more than one GPU can have (at most 1048576 MiB)"},
		{name: "bad annotation", pod: annotated("x"),
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "x": want a positive quantity of memory such as 20Gi or 16384Mi`},
		{name: "8Ei annotation", pod: annotated("8Ei"),
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "8Ei": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		{name: "bare annotation", pod: annotated("20480"),
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "20480": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 20480Mi or 20Gi`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := PodRequest(&tc.pod)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tc.wantErr || ok != tc.ok || got != tc.want {
				t.Fatalf("PodRequest = %+v %v %q, want %+v %v %q", got, ok, gotErr, tc.want, tc.ok, tc.wantErr)
			}
		})
	}
}

func TestFactsErrors(t *testing.T) {
	pl, _ := NewPlacer(DefaultPolicy())
	if _, err := pl.Facts(NewCluster(), Pod{Request: api.GPURequest{MemoryMiB: 1, Count: 1}, Override: "random"}); err == nil ||
		err.Error() != `annotation mlplane.io/placement: unknown strategy "random", want one of binpack, spread` {
		t.Fatalf("err = %v", err)
	}
	off := false
	p := DefaultPolicy()
	p.AllowPodOverride = &off
	pl, _ = NewPlacer(p)
	// With overrides off the annotation is ignored, even a bad one.
	if _, err := pl.Facts(NewCluster(), Pod{Request: api.GPURequest{MemoryMiB: 1, Count: 1}, Override: "random"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pl.Facts(NewCluster(), Pod{Request: api.GPURequest{MemoryMiB: 1, Count: 0}}); err == nil {
		t.Fatal("zero GPUs accepted")
	}
}

// TestGPUModels: only the GPUs of the models a pod allows are considered,
// with a GPUModel reason for nodes that have none (issue 16 item 6).
func TestGPUModels(t *testing.T) {
	h100 := api.GPU{Index: 0, UUID: "mixed-h100", Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 80 * gi, Healthy: true}
	l4 := api.GPU{Index: 1, UUID: "mixed-l4", Model: "NVIDIA L4", MemoryMiB: 24 * gi, Healthy: true}
	l40s := api.GPU{Index: 0, UUID: "l40s-0", Model: "NVIDIA L40S", MemoryMiB: 48 * gi, Healthy: true}
	c := NewCluster()
	c.SetNode("mixed", []api.GPU{h100, l4}, "")
	c.SetNode("l4s", []api.GPU{{UUID: "l4-0", Model: "NVIDIA L4", MemoryMiB: 24 * gi, Healthy: true}, {Index: 1, UUID: "l4-1", Model: "NVIDIA L4", MemoryMiB: 24 * gi, Healthy: true}}, "")
	c.SetNode("l40s", []api.GPU{l40s}, "")
	for _, n := range c.NodeNames() {
		c.SetLease(n, NeverExpires)
	}
	pl, err := NewPlacer(DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		models api.GPUModels
		count  int
		node   string
		fit    bool
		pick   []string
		reason Reason
	}{
		// binpack alone would pick the L4 (best fit for 10Gi); only the H100 is allowed
		{name: "use H100 on the mixed node", models: api.GPUModels{Use: []string{"H100"}}, count: 1, node: "mixed", fit: true, pick: []string{"mixed-h100"}},
		{name: "avoid L4 on the mixed node", models: api.GPUModels{Avoid: []string{"l4"}}, count: 1, node: "mixed", fit: true, pick: []string{"mixed-h100"}},
		{name: "no model set picks the best fit", count: 1, node: "mixed", fit: true, pick: []string{"mixed-l4"}},
		{name: "use L4 on the mixed node", models: api.GPUModels{Use: []string{"L4"}}, count: 1, node: "mixed", fit: true, pick: []string{"mixed-l4"}},
		{name: "use H100 on a node of L4s", models: api.GPUModels{Use: []string{"H100"}}, count: 1, node: "l4s",
			reason: Reason{Code: ReasonGPUModel, Message: "no GPU of model H100 (node has NVIDIA L4 x2)"}},
		// L4 is a word: the L40S is not an L4
		{name: "avoid L4 keeps the L40S", models: api.GPUModels{Avoid: []string{"L4"}}, count: 1, node: "l40s", fit: true, pick: []string{"l40s-0"}},
		{name: "use L4 is not the L40S", models: api.GPUModels{Use: []string{"L4"}}, count: 1, node: "l40s",
			reason: Reason{Code: ReasonGPUModel, Message: "no GPU of model L4 (node has NVIDIA L40S x1)"}},
		{name: "both lists", models: api.GPUModels{Use: []string{"NVIDIA"}, Avoid: []string{"L4", "H100"}}, count: 1, node: "mixed",
			reason: Reason{Code: ReasonGPUModel, Message: "no GPU of model NVIDIA, not of model L4 or H100 (node has NVIDIA H100 80GB HBM3 x1, NVIDIA L4 x1)"}},
		// 2 GPUs asked, 1 H100 on the node
		{name: "too few of the model", models: api.GPUModels{Use: []string{"H100"}}, count: 2, node: "mixed",
			reason: Reason{Code: ReasonGPUModel, Message: "node has 1 healthy GPU of model H100, pod needs 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := pl.Facts(c, Pod{Key: "p", Request: api.GPURequest{MemoryMiB: 10 * gi, Count: tc.count}, Models: tc.models})
			if err != nil {
				t.Fatal(err)
			}
			n := c.Node(tc.node)
			fit, why := f.Fit(tc.node, n, 0)
			if fit != tc.fit || why != tc.reason {
				t.Fatalf("Fit = %v %+v, want %v %+v", fit, why, tc.fit, tc.reason)
			}
			if !fit {
				return
			}
			if d := cmp.Diff(tc.pick, f.Pick(n)); d != "" {
				t.Errorf("Pick (-want +got):\n%s", d)
			}
		})
	}
}

func TestPodOf(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u1", Annotations: map[string]string{
		api.AnnotationGPUMemory: "10Gi", api.AnnotationGPUModel: "H100, A100", api.AnnotationGPUModelAvoid: "H100 NVL", api.AnnotationPlacement: "spread"}}}
	got, ok, err := PodOf(pod)
	want := Pod{Key: "u1", Request: api.GPURequest{MemoryMiB: 10 * gi, Count: 1}, Override: "spread",
		Models: api.GPUModels{Use: []string{"H100", "A100"}, Avoid: []string{"H100 NVL"}}}
	if d := cmp.Diff(want, got); d != "" || !ok || err != nil {
		t.Fatalf("PodOf = %v %v (-want +got):\n%s", ok, err, d)
	}
	pod.Annotations[api.AnnotationGPUModel] = "H100,"
	if _, ok, err := PodOf(pod); ok || err == nil || err.Error() != `annotation mlplane.io/gpu-model: invalid value "H100,": model 2 is empty; want a comma-separated list of at most 16 GPU models such as "H100,A100" (letters, digits, spaces, '-', '_' and '.')` {
		t.Fatalf("PodOf with a bad list = %v %v", ok, err)
	}
}
