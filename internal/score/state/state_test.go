package state

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
)

const gi = 1024

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func node(name string, sizesGi ...int64) *corev1.Node {
	var gpus []api.GPU
	for i, s := range sizesGi {
		gpus = append(gpus, api.GPU{Index: i, UUID: name + "-" + string(rune('a'+i)), MemoryMiB: s * gi, Healthy: true})
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{api.NodeAnnotationGPUs: api.EncodeInventory(gpus)}}}
}

func pod(uid, ids string, memGi string, phase corev1.PodPhase) *corev1.Pod {
	ann := map[string]string{api.AnnotationGPUMemory: memGi}
	if ids != "" {
		ann[api.AnnotationGPUIDs] = ids
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: k8stypes.UID("uid-" + uid), Name: uid, Namespace: "ml", Annotations: ann}, Status: corev1.PodStatus{Phase: phase}}
}

func free(s *State, n string) []int64 {
	var out []int64
	s.View(func(c *score.Cluster, _ int64) {
		for _, g := range c.Node(n).GPUs {
			out = append(out, g.FreeMiB())
		}
	})
	return out
}

func TestPodLifecycle(t *testing.T) {
	clock := t0
	s := New(Options{Now: func() time.Time { return clock }, ReservationTTL: time.Minute})
	s.OnNode(node("n", 80, 80))
	p := pod("p", "", "20Gi", corev1.PodPending)
	// Bind reserves GPU a.
	_ = s.Update(func(tx Txn, _ int64) error {
		tx.Reserve(p.UID, score.Assignment{GPUs: []string{"n-a"}, MemoryMiB: 20 * gi})
		return nil
	})
	// A stale event without the annotation must not drop the reservation.
	s.OnPod(p)
	if d := cmp.Diff([]int64{60 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatalf("stale event dropped the reservation: %s", d)
	}
	// The informer sees the annotation: confirmed, the reservation goes.
	p = pod("p", "n-a", "20Gi", corev1.PodRunning)
	s.OnPod(p)
	if s.Reservations() != 0 {
		t.Fatal("reservation not confirmed")
	}
	if d := cmp.Diff([]int64{60 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatal(d)
	}
	// Terminal pods hold nothing.
	p.Status.Phase = corev1.PodSucceeded
	s.OnPod(p)
	if d := cmp.Diff([]int64{80 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatalf("terminal pod still counted: %s", d)
	}
	// A pod with an annotation but no nodeName (a bind that crashed half
	// way) counts: the GPUs may be in use by the time it is bound.
	q := pod("q", "n-b", "30Gi", corev1.PodPending)
	s.OnPod(q)
	if d := cmp.Diff([]int64{80 * gi, 50 * gi}, free(s, "n")); d != "" {
		t.Fatal(d)
	}
	s.OnPodDelete(q.UID)
	if d := cmp.Diff([]int64{80 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatal(d)
	}
	// An unconfirmed reservation expires after its TTL.
	_ = s.Update(func(tx Txn, _ int64) error {
		tx.Reserve("lost", score.Assignment{GPUs: []string{"n-a"}, MemoryMiB: 10 * gi})
		return nil
	})
	s.Sweep()
	if s.Reservations() != 1 {
		t.Fatal("swept too early")
	}
	clock = clock.Add(time.Minute + time.Second)
	s.Sweep()
	if s.Reservations() != 0 || free(s, "n")[0] != 80*gi {
		t.Fatal("expired reservation kept")
	}
	// Release falls back to what the informer saw.
	r := pod("r", "n-a", "8Gi", corev1.PodPending)
	s.OnPod(r)
	_ = s.Update(func(tx Txn, _ int64) error {
		tx.Reserve(r.UID, score.Assignment{GPUs: []string{"n-b"}, MemoryMiB: 8 * gi})
		return nil
	})
	if d := cmp.Diff([]int64{80 * gi, 72 * gi}, free(s, "n")); d != "" {
		t.Fatal(d)
	}
	s.Release(r.UID)
	if d := cmp.Diff([]int64{72 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatal(d)
	}
}

// TestInvalidBooking: a pod holding GPUs whose GPU request became invalid
// (8Ei overflowed into negative MiB and wiped the other pods' bookings) books
// each GPU it names whole, and gives them back when fixed or deleted.
func TestInvalidBooking(t *testing.T) {
	var logged strings.Builder
	s := New(Options{Now: func() time.Time { return t0 }, Logger: funcr.New(func(prefix, args string) { logged.WriteString(args + "\n") }, funcr.Options{})})
	s.OnNode(node("n", 80, 80))
	s.OnPod(pod("other", "n-a", "30Gi", corev1.PodRunning))
	// GPU a: 80-30 = 50 GiB free.
	if d := cmp.Diff([]int64{50 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatal(d)
	}
	for _, mem := range []string{"8Ei", "9Ei", "99999999999999999999Gi", "lots", "20480"} {
		t.Run(mem, func(t *testing.T) {
			logged.Reset()
			bad := pod("bad", "n-a", mem, corev1.PodRunning)
			a, ok, invalid := Assignment(bad)
			if !ok || invalid == nil || a.MemoryMiB != api.MaxGPUMemoryMiB || !cmp.Equal(a.GPUs, []string{"n-a"}) {
				t.Fatalf("Assignment = %+v %v %v, want GPU n-a booked whole with an error", a, ok, invalid)
			}
			s.OnPod(bad)
			// GPU a is full; the other pod's 30 GiB stays booked under it.
			if d := cmp.Diff([]int64{0, 80 * gi}, free(s, "n")); d != "" {
				t.Fatalf("free (-want +got):\n%s", d)
			}
			if want := `"msg"="pod has GPUs assigned but an invalid GPU request; its GPUs are booked whole until it is fixed or deleted" "pod"="ml/bad" "gpus"=["n-a"] "error"="annotation mlplane.io/gpu-memory: invalid value \"` + mem; !strings.Contains(logged.String(), want) {
				t.Fatalf("log %q\nwant it to contain %q", logged.String(), want)
			}
			// Fixed: 80-30-10 = 40 GiB free.
			s.OnPod(pod("bad", "n-a", "10Gi", corev1.PodRunning))
			if d := cmp.Diff([]int64{40 * gi, 80 * gi}, free(s, "n")); d != "" {
				t.Fatalf("after the fix (-want +got):\n%s", d)
			}
			s.OnPod(bad)
			s.OnPodDelete(bad.UID)
			if d := cmp.Diff([]int64{50 * gi, 80 * gi}, free(s, "n")); d != "" {
				t.Fatalf("after delete (-want +got):\n%s", d)
			}
		})
	}
	// A pod with GPU ids and no GPU request at all holds nothing.
	none := pod("none", "n-b", "", corev1.PodRunning)
	delete(none.Annotations, api.AnnotationGPUMemory)
	if _, ok, invalid := Assignment(none); ok || invalid != nil {
		t.Fatalf("pod without a request: ok=%v invalid=%v", ok, invalid)
	}
}

// TestHold: the filter's hold books GPUs until the bind replaces it, and
// gives way to anything else the extender knows of the pod.
func TestHold(t *testing.T) {
	clock := t0
	s := New(Options{Now: func() time.Time { return clock }, ReservationTTL: time.Minute})
	s.OnNode(node("n", 80, 80))
	hold := func(p *corev1.Pod, gpu string) bool {
		var ok bool
		_ = s.Update(func(tx Txn, _ int64) error {
			ok = tx.Hold(p.UID, score.Assignment{GPUs: []string{gpu}, MemoryMiB: 20 * gi}, 10*time.Second)
			return nil
		})
		return ok
	}
	reserve := func(p *corev1.Pod, gpu string) {
		_ = s.Update(func(tx Txn, _ int64) error {
			tx.Reserve(p.UID, score.Assignment{GPUs: []string{gpu}, MemoryMiB: 20 * gi})
			return nil
		})
	}

	// A hold books its GPU and expires after its own TTL, not the
	// reservation TTL.
	p := pod("p", "", "20Gi", corev1.PodPending)
	if !hold(p, "n-a") {
		t.Fatal("hold refused")
	}
	if d := cmp.Diff([]int64{60 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatalf("hold not counted: %s", d)
	}
	clock = clock.Add(11 * time.Second)
	s.Sweep()
	if d := cmp.Diff([]int64{80 * gi, 80 * gi}, free(s, "n")); d != "" || s.Reservations() != 0 {
		t.Fatalf("hold outlived its TTL: %s", d)
	}

	// A new hold replaces the pod's old one; a bind's Reserve replaces a
	// hold and lasts the reservation TTL; a later hold does not replace
	// the bind's reservation.
	if !hold(p, "n-a") || !hold(p, "n-b") {
		t.Fatal("hold refused")
	}
	if d := cmp.Diff([]int64{80 * gi, 60 * gi}, free(s, "n")); d != "" {
		t.Fatalf("second hold did not replace the first: %s", d)
	}
	reserve(p, "n-a")
	if hold(p, "n-b") {
		t.Fatal("a hold replaced a bind's reservation")
	}
	clock = clock.Add(30 * time.Second)
	s.Sweep()
	if d := cmp.Diff([]int64{60 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatalf("bind's reservation lost: %s", d)
	}

	// The informer showing the pod with other GPUs (a lost bind answer)
	// overrules a hold, and an annotated pod gets no hold.
	q := pod("q", "", "20Gi", corev1.PodPending)
	if !hold(q, "n-b") {
		t.Fatal("hold refused")
	}
	s.OnPod(pod("q", "n-a", "20Gi", corev1.PodPending))
	if s.Reservations() != 1 { // p's reservation only
		t.Fatalf("%d reservations, want the hold dropped", s.Reservations())
	}
	if d := cmp.Diff([]int64{40 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatalf("informer's GPUs not counted over the hold: %s", d)
	}
	if hold(q, "n-b") {
		t.Fatal("an annotated pod got a hold")
	}
	// A deleted pod's hold goes with it.
	r := pod("r", "", "20Gi", corev1.PodPending)
	hold(r, "n-b")
	s.OnPodDelete(r.UID)
	if d := cmp.Diff([]int64{40 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Fatalf("deleted pod's hold kept: %s", d)
	}
}

func TestSeed(t *testing.T) {
	s := New(Options{Now: func() time.Time { return t0 }})
	s.OnNode(node("n", 80))
	seen := pod("seen", "n-a", "10Gi", corev1.PodRunning)
	s.OnPod(seen)
	missed := pod("missed", "n-a", "20Gi", corev1.PodPending)
	done := pod("done", "n-a", "40Gi", corev1.PodFailed)
	if n := s.Seed([]corev1.Pod{*seen, *missed, *done}); n != 1 {
		t.Fatalf("seeded %d, want 1 (only the pod the informer missed)", n)
	}
	// 80 - 10 - 20 = 50
	if d := cmp.Diff([]int64{50 * gi}, free(s, "n")); d != "" {
		t.Fatal(d)
	}
}

func TestNodesAndLeases(t *testing.T) {
	s := New(Options{Now: func() time.Time { return t0 }})
	bad := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bad", Annotations: map[string]string{api.NodeAnnotationGPUs: "{"}}}
	s.OnNode(bad)
	s.OnNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "plain"}})
	s.OnNode(node("n", 80))
	renew := metav1.NewMicroTime(t0.Add(-10 * time.Second))
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: api.LeaseNamespace, Name: api.LeaseName("n")}, Spec: coordinationv1.LeaseSpec{RenewTime: &renew}}
	s.OnLease(lease)
	// Another Lease in the namespace is ignored.
	s.OnLease(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: api.LeaseNamespace, Name: "mlplane-extender"}, Spec: coordinationv1.LeaseSpec{RenewTime: &renew}})
	s.View(func(c *score.Cluster, now int64) {
		if got := c.Node("bad").Problem; !strings.HasPrefix(got, "annotation "+api.NodeAnnotationGPUs+": invalid JSON") {
			t.Errorf("bad inventory problem %q", got)
		}
		if got := c.Node("plain").Problem; got != NodeProblemNoInventory {
			t.Errorf("plain node problem %q", got)
		}
		// renewed 10s ago, valid for LeaseDuration after that.
		if want := t0.Add(-10*time.Second + api.LeaseDuration).UnixNano(); c.Node("n").LeaseExpiry != want {
			t.Errorf("expiry %d, want %d", c.Node("n").LeaseExpiry, want)
		}
		if c.Node("mlplane-extender") != nil {
			t.Error("a non-agent Lease made a node")
		}
	})
	s.OnLeaseDelete(lease)
	s.View(func(c *score.Cluster, _ int64) {
		if c.Node("n").LeaseExpiry != score.NoLease {
			t.Error("deleted Lease still counts")
		}
	})
	s.OnNodeDelete("n")
	s.View(func(c *score.Cluster, _ int64) {
		if c.Node("n") != nil {
			t.Error("deleted node still there")
		}
	})
}

func TestTrimPod(t *testing.T) {
	p := pod("p", "n-a", "20Gi", corev1.PodRunning)
	p.Annotations["other"] = "dropped"
	p.Spec.NodeName = "n"
	p.Spec.Containers = []corev1.Container{{Name: "c", Image: "big", Env: []corev1.EnvVar{{Name: "X"}}}}
	out, _ := trimPod(p)
	tp := out.(*corev1.Pod)
	if _, has := tp.Annotations["other"]; has || tp.Spec.Containers[0].Image != "" || tp.Spec.NodeName != "n" {
		t.Fatalf("trimmed %+v", tp)
	}
	a, ok, _ := Assignment(tp)
	if !ok || a.MemoryMiB != 20*gi || a.GPUs[0] != "n-a" {
		t.Fatalf("assignment lost by trimming: %+v %v", a, ok)
	}
}

// TestTrimPodKeepsPlacement: whatever score.PodOf reads survives trimming,
// so a pod from the informer's cache is placed and booked as the pod is: the
// GPU model annotations, and GPU requests on init containers and sidecars
// (issue 16 items 2 and 6).
func TestTrimPodKeepsPlacement(t *testing.T) {
	res := func(q string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse(q)}}
	}
	models := pod("models", "", "10Gi", corev1.PodPending)
	models.Annotations[api.AnnotationGPUModel] = "H100"
	models.Annotations[api.AnnotationGPUModelAvoid] = "H100 NVL"
	initOnly := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "init", UID: "u-init"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "warmup", Image: "x", Resources: res("20480")}},
		Containers:     []corev1.Container{{Name: "server", Image: "x"}}}}
	// sidecar 4096 + main 16384 = 20480, the init container after it 18432 + 4096 = 22528
	sidecar := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sidecar", UID: "u-sidecar"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "side", Resources: res("4096"), RestartPolicy: new(corev1.ContainerRestartPolicyAlways)}, {Name: "late", Resources: res("18432")}},
		Containers:     []corev1.Container{{Name: "server", Resources: res("16384")}}}}
	for _, p := range []*corev1.Pod{models, initOnly, sidecar} {
		want, wantOK, wantErr := score.PodOf(p)
		out, _ := trimPod(p)
		got, ok, err := score.PodOf(out.(*corev1.Pod))
		if d := cmp.Diff(want, got); d != "" || ok != wantOK || (err == nil) != (wantErr == nil) || !ok {
			t.Errorf("pod %s: PodOf after trimming = %v %v, before %v %v (-before +after):\n%s", p.Name, ok, err, wantOK, wantErr, d)
		}
	}
	if got, _, _ := score.PodOf(sidecar); got.Request.MemoryMiB != 22528 {
		t.Errorf("sidecar pod: %d MiB, want 22528", got.Request.MemoryMiB)
	}
}
