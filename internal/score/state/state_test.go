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
			if want := `"msg"="pod has GPUs assigned but an invalid GPU request; booked from its containers' request (each GPU whole without one) until it is fixed or deleted" "pod"="ml/bad" "gpus"=["n-a"] "bookedMiB"=1048576 "error"="annotation mlplane.io/gpu-memory: invalid value \"` + mem; !strings.Contains(logged.String(), want) {
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
	// With the containers' request (what the webhook gave them at creation,
	// which cannot change), that is booked instead of whole GPUs: 40960 MiB
	// over 2 GPUs = 20480 on each.
	given := pod("given", "n-a,n-b", "lots", corev1.PodRunning)
	given.Spec.Containers = []corev1.Container{{Name: "server", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse("40960")}}}}
	if a, ok, invalid := Assignment(given); !ok || invalid == nil || a.MemoryMiB != 20*gi {
		t.Fatalf("Assignment = %+v %v %v, want 20480 MiB on each GPU with an error", a, ok, invalid)
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

// boundPod is pod bound to node n.
func boundPod(uid, ids, memGi string) *corev1.Pod {
	p := pod(uid, ids, memGi, corev1.PodRunning)
	p.Spec.NodeName = "n"
	return p
}

// TestBookingFixedAtBind: once the extender has seen a pod bound, edits of
// its annotations (without the admission policy that refuses them) neither
// move nor shrink its booking, nor drop it (issue 16 item 4: 120 GiB were
// booked on an 80 GiB GPU, and an invalid value dropped the pod).
func TestBookingFixedAtBind(t *testing.T) {
	var logged strings.Builder
	s := New(Options{Now: func() time.Time { return t0 }, Logger: funcr.New(func(_, args string) { logged.WriteString(args + "\n") }, funcr.Options{})})
	s.OnNode(node("n", 80, 80))
	p := boundPod("p", "n-a", "60Gi")
	s.OnPod(p)
	// a: 80-60 = 20
	want := []int64{20 * gi, 80 * gi}
	for _, edit := range []struct {
		name string
		ann  map[string]string
	}{
		{"shrunk to 1Gi", map[string]string{api.AnnotationGPUMemory: "1Gi"}},
		{"moved to a GPU of another node", map[string]string{api.AnnotationGPUIDs: "elsewhere-a"}},
		{"gpu-ids removed", map[string]string{api.AnnotationGPUIDs: ""}},
		{"gpu-memory invalid", map[string]string{api.AnnotationGPUMemory: "lots"}},
		{"gpu-memory removed", map[string]string{api.AnnotationGPUMemory: ""}},
		{"gpu-count invalid", map[string]string{api.AnnotationGPUCount: "0"}},
	} {
		e := boundPod("p", "n-a", "60Gi")
		for k, v := range edit.ann {
			if v == "" {
				delete(e.Annotations, k)
			} else {
				e.Annotations[k] = v
			}
		}
		s.OnPod(e)
		s.OnPod(e) // the kubelet's next status update: logged once
		if d := cmp.Diff(want, free(s, "n")); d != "" {
			t.Errorf("%s: free (-want +got):\n%s", edit.name, d)
		}
	}
	if got := s.BookingEdits(); got != 6 {
		t.Errorf("BookingEdits = %d, want 6", got)
	}
	if w := `"msg"="bound pod's GPU annotations were changed; its booking stays as fixed at bind" "pod"="ml/p" "bookedGPUs"=["n-a"] "bookedMiB"=61440 "addedGPUs"=[] "mlplane.io/gpu-ids"="n-a" "mlplane.io/gpu-memory"="1Gi" "mlplane.io/gpu-count"=""`; !strings.Contains(logged.String(), w) {
		t.Errorf("log %q\nwant it to contain %q", logged.String(), w)
	}
	if n := strings.Count(logged.String(), "its booking stays"); n != 6 {
		t.Errorf("%d log lines for 6 edits", n)
	}
	// Moved to GPU b of its own node: a restarted container would run
	// there, so b is booked too, and a stays (the running one is there);
	// moving back keeps both.
	logged.Reset()
	moved := boundPod("p", "n-b", "60Gi")
	s.OnPod(moved)
	s.OnPod(p)
	if d := cmp.Diff([]int64{20 * gi, 20 * gi}, free(s, "n")); d != "" {
		t.Errorf("moved to GPU b: free (-want +got):\n%s", d)
	}
	if w := `"msg"="bound pod's gpu-ids were changed to GPUs of its node it was not booked on; booked there too, and the booking at bind stays" "pod"="ml/p" "bookedGPUs"=["n-a" "n-b"] "bookedMiB"=61440 "addedGPUs"=["n-b"] "mlplane.io/gpu-ids"="n-b"`; !strings.Contains(logged.String(), w) {
		t.Errorf("log %q\nwant it to contain %q", logged.String(), w)
	}
	want = []int64{20 * gi, 20 * gi}
	// A new leader's seed does not replace the booking with what the API
	// server shows.
	if n := s.Seed([]corev1.Pod{*boundPod("p", "n-b", "1Gi")}); n != 0 {
		t.Errorf("seeded %d over a fixed booking", n)
	}
	_ = s.Update(func(tx Txn, _ int64) error {
		tx.Reserve(p.UID, score.Assignment{GPUs: []string{"n-b"}, MemoryMiB: gi})
		return nil
	})
	if d := cmp.Diff(want, free(s, "n")); d != "" || s.Reservations() != 0 {
		t.Errorf("a reservation replaced a fixed booking: %d reservations, free (-want +got):\n%s", s.Reservations(), d)
	}
	// The pod ends: its memory is free again.
	done := boundPod("p", "n-b", "1Gi")
	done.Status.Phase = corev1.PodSucceeded
	s.OnPod(done)
	if d := cmp.Diff([]int64{80 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Errorf("after the pod ended (-want +got):\n%s", d)
	}

	// Edited between the Binding and the informer's first sight: the
	// booking covers what the bind reserved and what the pod says.
	q := boundPod("q", "n-a", "10Gi")
	_ = s.Update(func(tx Txn, _ int64) error {
		tx.Reserve(q.UID, score.Assignment{GPUs: []string{"n-b"}, MemoryMiB: 30 * gi})
		return nil
	})
	s.OnPod(q)
	if d := cmp.Diff([]int64{50 * gi, 50 * gi}, free(s, "n")); d != "" || s.Reservations() != 0 {
		t.Errorf("first sight differing from the bind: %d reservations, free (-want +got):\n%s", s.Reservations(), d)
	}
	s.OnPodDelete(q.UID)
	if d := cmp.Diff([]int64{80 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Errorf("after delete (-want +got):\n%s", d)
	}
	// A pending pod is not fixed: its bind re-picks.
	r := pod("r", "n-a", "10Gi", corev1.PodPending)
	s.OnPod(r)
	s.OnPod(pod("r", "n-b", "10Gi", corev1.PodPending))
	if d := cmp.Diff([]int64{80 * gi, 70 * gi}, free(s, "n")); d != "" {
		t.Errorf("pending pod (-want +got):\n%s", d)
	}
}

// TestGPUPublishedTwice: a GPU UUID that two nodes' agents publish is used
// on neither, so one GPU's memory is never booked on two nodes; the
// nodes' other GPUs stay, and the GPU comes back once one node stops.
func TestGPUPublishedTwice(t *testing.T) {
	var logged strings.Builder
	s := New(Options{Now: func() time.Time { return t0 }, Logger: funcr.New(func(_, args string) { logged.WriteString(args + "\n") }, funcr.Options{})})
	s.OnNode(node("n", 80, 80))
	s.OnPod(boundPod("p", "n-a", "30Gi"))
	// Node m's agent claims n's GPU a beside its own.
	liar := node("m", 40)
	liar.Annotations[api.NodeAnnotationGPUs] = api.EncodeInventory([]api.GPU{
		{Index: 0, UUID: "m-a", MemoryMiB: 40 * gi, Healthy: true},
		{Index: 1, UUID: "n-a", MemoryMiB: 80 * gi, Healthy: true},
	})
	s.OnNode(liar)
	uuids := func(name string) []string {
		var out []string
		s.View(func(c *score.Cluster, _ int64) {
			for _, g := range c.Node(name).GPUs {
				out = append(out, g.UUID)
			}
		})
		return out
	}
	if d := cmp.Diff([]string{"n-b"}, uuids("n")); d != "" {
		t.Errorf("node n (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"m-a"}, uuids("m")); d != "" {
		t.Errorf("node m (-want +got):\n%s", d)
	}
	if w := `"msg"="GPU published by more than one node's agent; not used on any of them until only one publishes it" "gpu"="n-a" "nodes"=["n" "m"]`; !strings.Contains(logged.String(), w) {
		t.Errorf("log %q\nwant it to contain %q", logged.String(), w)
	}
	// Updates that change nothing log nothing more.
	s.OnNode(liar)
	s.OnNode(node("n", 80, 80))
	if n := strings.Count(logged.String(), "more than one node"); n != 1 {
		t.Errorf("%d conflict log lines, want 1", n)
	}
	// m stops claiming it: n has GPU a back, with p's booking on it.
	s.OnNodeDelete("m")
	if d := cmp.Diff([]int64{50 * gi, 80 * gi}, free(s, "n")); d != "" {
		t.Errorf("after m left (-want +got):\n%s", d)
	}
}

// TestLeaseJudgedByOwnClock: a node agent's renewTime is its own clock; a
// renewal counts when the extender sees it, on the extender's clock.
func TestLeaseJudgedByOwnClock(t *testing.T) {
	clock := t0
	s := New(Options{Now: func() time.Time { return clock }})
	s.OnNode(node("n", 80))
	lease := func(renew time.Time) *coordinationv1.Lease {
		r := metav1.NewMicroTime(renew)
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: api.LeaseNamespace, Name: api.LeaseName("n")}, Spec: coordinationv1.LeaseSpec{RenewTime: &r}}
	}
	expiry := func() time.Duration {
		var e int64
		s.View(func(c *score.Cluster, _ int64) { e = c.Node("n").LeaseExpiry })
		return time.Duration(e - t0.UnixNano())
	}
	// The agent's clock is an hour ahead; it dies right after renewing.
	// Its Lease counts LeaseDuration from when it was seen, not an hour.
	s.OnLease(lease(t0.Add(time.Hour)))
	if got := expiry(); got != api.LeaseDuration {
		t.Errorf("clock ahead: expiry t0%+v, want t0+%v", got, api.LeaseDuration)
	}
	// An update that does not change renewTime renews nothing.
	clock = t0.Add(30 * time.Second)
	s.OnLease(lease(t0.Add(time.Hour)))
	if got := expiry(); got != api.LeaseDuration {
		t.Errorf("no renewal: expiry t0%+v, want t0+%v", got, api.LeaseDuration)
	}
	// A renewal seen at t0+30s: alive until t0+30s+LeaseDuration, even
	// when the agent's clock stepped back.
	s.OnLease(lease(t0.Add(-time.Hour)))
	if got, want := expiry(), 30*time.Second+api.LeaseDuration; got != want {
		t.Errorf("renewal: expiry t0%+v, want t0+%v", got, want)
	}
	// After a restart (first sight), a Lease is as old as renewTime says:
	// an agent an hour behind looks dead until its next renewal.
	s2 := New(Options{Now: func() time.Time { return t0 }})
	s2.OnNode(node("n", 80))
	s2.OnLease(lease(t0.Add(-time.Hour)))
	s2.View(func(c *score.Cluster, now int64) {
		if e := c.Node("n").LeaseExpiry; e > now {
			t.Errorf("first sight of an hour-old renewTime: expiry %v after now", time.Duration(e-now))
		}
	})
}
