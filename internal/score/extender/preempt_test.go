package extender

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
	"github.com/mlplane/mlplane/internal/score/state"
)

// preemptFixture is an extender whose pods are a map (the informer's
// cache), with PDBs, recorded events and recorded evictions.
type preemptFixture struct {
	st        *state.State
	ext       *Extender
	mu        sync.Mutex
	pods      map[string]*corev1.Pod // ns/name
	pdbs      []*policyv1.PodDisruptionBudget
	events    []string // "type reason note"
	evictions []string // ns/name
	refuse    map[string]error
}

type recorder struct{ f *preemptFixture }

func (r recorder) Eventf(regarding, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	r.f.events = append(r.f.events, eventtype+" "+reason+" "+regarding.(*corev1.Pod).Name+": "+fmt.Sprintf(note, args...))
}

func newPreemptFixture(t *testing.T, nodes ...*corev1.Node) *preemptFixture {
	t.Helper()
	f := &preemptFixture{pods: map[string]*corev1.Pod{}, refuse: map[string]error{}}
	f.st = state.New(state.Options{Now: func() time.Time { return now }})
	for _, n := range nodes {
		f.st.OnNode(n)
		f.st.OnLease(agentLease(n.Name, now.Add(-time.Second)))
	}
	client := fake.NewClientset()
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateAction)
		if ca.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ev := ca.GetObject().(*policyv1.Eviction)
		key := ev.Namespace + "/" + ev.Name
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.refuse[key]; err != nil {
			return true, nil, err
		}
		f.evictions = append(f.evictions, key)
		return true, nil, nil
	})
	f.ext = New(Options{
		Client: client, State: f.st, Events: recorder{f},
		PodCache: func(ns, name string) (*corev1.Pod, bool) {
			f.mu.Lock()
			defer f.mu.Unlock()
			p, ok := f.pods[ns+"/"+name]
			return p, ok
		},
		PodsOnNode: func(node string) []*corev1.Pod {
			f.mu.Lock()
			defer f.mu.Unlock()
			var out []*corev1.Pod
			for _, p := range f.pods {
				if p.Spec.NodeName == node {
					out = append(out, p)
				}
			}
			return out
		},
		PDBs: func(ns string) []*policyv1.PodDisruptionBudget {
			var out []*policyv1.PodDisruptionBudget
			for _, p := range f.pdbs {
				if p.Namespace == ns {
					out = append(out, p)
				}
			}
			return out
		},
	})
	return f
}

// bound adds a running pod of priority prio holding memGi on gpu of node.
func (f *preemptFixture) bound(name string, prio int32, memGi int64, node string, gpu int) *corev1.Pod {
	p := gpuPod(name, memGi, 1)
	p.Labels = map[string]string{"app": name}
	p.Spec.Priority = &prio
	p.Spec.NodeName = node
	p.Annotations[api.AnnotationGPUIDs] = fmt.Sprintf("GPU-%s-%d", node, gpu)
	p.Status.Phase = corev1.PodRunning
	f.put(p)
	return p
}

// pending adds a pod of priority prio waiting for a node.
func (f *preemptFixture) pending(name string, prio int32, memGi int64) *corev1.Pod {
	p := gpuPod(name, memGi, 1)
	p.Spec.Priority = &prio
	p.Status.Phase = corev1.PodPending
	f.put(p)
	return p
}

func (f *preemptFixture) put(p *corev1.Pod) {
	f.mu.Lock()
	f.pods[p.Namespace+"/"+p.Name] = p
	f.mu.Unlock()
	f.st.OnPod(p)
}

// pdb protects the pods labelled app=name, allowing `allowed` disruptions.
func (f *preemptFixture) pdb(name string, allowed int32) {
	f.pdbs = append(f.pdbs, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "pdb-" + name, UID: types.UID("pdb-" + name)},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: new(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}},
		Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: allowed},
	})
}

func (f *preemptFixture) assignment(p *corev1.Pod) (score.Assignment, bool) {
	var a score.Assignment
	var ok bool
	f.st.View(func(c *score.Cluster, _ int64) { a, ok = c.Assignment(string(p.UID)) })
	return a, ok
}

func metaUIDs(mv *extenderv1.MetaVictims) []string {
	if mv == nil {
		return nil
	}
	var out []string
	for _, p := range mv.Pods {
		out = append(out, p.UID)
	}
	return out
}

// TestPreemptVerb: kube-scheduler, checking the node's total, offers the two
// 30 GiB pods on different GPUs, which would leave no GPU with 60 GiB; the
// verb names both pods of one GPU instead, and drops the node where nothing
// helps (issue 16 item 1).
func TestPreemptVerb(t *testing.T) {
	f := newPreemptFixture(t, gpuNode("n", 2, 80), gpuNode("m", 1, 80))
	c := f.bound("c", 1, 30, "n", 0)
	d := f.bound("d", 2, 50, "n", 0)
	e := f.bound("e", 1, 30, "n", 1)
	f.bound("f", 2, 50, "n", 1)
	high := f.bound("high", 100, 70, "m", 0) // not preemptible by priority 10
	p := f.pending("p", 10, 60)

	res := f.ext.Preempt(&extenderv1.ExtenderPreemptionArgs{Pod: p, NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{
		"n": {Pods: []*extenderv1.MetaPod{{UID: string(c.UID)}, {UID: string(e.UID)}}},
		"m": {Pods: []*extenderv1.MetaPod{{UID: string(high.UID)}}},
	}})
	if len(res.NodeNameToMetaVictims) != 1 {
		t.Fatalf("nodes = %v, want only n", res.NodeNameToMetaVictims)
	}
	if got, want := metaUIDs(res.NodeNameToMetaVictims["n"]), []string{string(d.UID), string(c.UID)}; !slices.Equal(got, want) {
		t.Fatalf("victims on n = %v, want %v (both pods of GPU 0)", got, want)
	}

	// A pod that asks for no GPU memory: the scheduler's choice stands.
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "plain", UID: "uid-plain"}}
	in := map[string]*extenderv1.MetaVictims{"n": {Pods: []*extenderv1.MetaPod{{UID: string(c.UID)}}, NumPDBViolations: 1}}
	res = f.ext.Preempt(&extenderv1.ExtenderPreemptionArgs{Pod: plain, NodeNameToMetaVictims: in})
	if got := res.NodeNameToMetaVictims["n"]; got == nil || !slices.Equal(metaUIDs(got), []string{string(c.UID)}) || got.NumPDBViolations != 1 {
		t.Fatalf("non-GPU pod: %+v, want the scheduler's victims", res.NodeNameToMetaVictims)
	}
}

// TestPreemptVerbPDB: the PDB violation count is the scheduler's.
func TestPreemptVerbPDB(t *testing.T) {
	f := newPreemptFixture(t, gpuNode("n", 1, 80))
	a := f.bound("a", 0, 50, "n", 0)
	f.pdb("a", 0)
	p := f.pending("p", 10, 60)
	res := f.ext.Preempt(&extenderv1.ExtenderPreemptionArgs{Pod: p, NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{"n": {}}})
	got := res.NodeNameToMetaVictims["n"]
	if !slices.Equal(metaUIDs(got), []string{string(a.UID)}) || got.NumPDBViolations != 1 {
		t.Fatalf("victims = %+v, want a with 1 PDB violation", got)
	}
}

// fail runs the filter for p over nodes as the scheduler would, and checks
// that no node passed.
func (f *preemptFixture) fail(t *testing.T, p *corev1.Pod, nodes ...string) {
	t.Helper()
	res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p, NodeNames: &nodes})
	if res.NodeNames != nil && len(*res.NodeNames) > 0 {
		t.Fatalf("filter passed %v", *res.NodeNames)
	}
}

// TestPreemptFragmented: the node's total fits, so kube-scheduler finds no
// victim and never asks; after PreemptionGrace the extender evicts the pod
// without a PDB, holds its GPU for the preemptor and says so in an event.
func TestPreemptFragmented(t *testing.T) {
	f := newPreemptFixture(t, gpuNode("n", 2, 80))
	f.bound("a", 0, 50, "n", 0)
	f.pdb("a", 0)
	f.bound("b", 0, 50, "n", 1)
	p := f.pending("p", 10, 60)
	f.fail(t, p, "n")

	start := time.Now()
	f.ext.PreemptOnce(context.Background(), start)
	if len(f.evictions) != 0 {
		t.Fatalf("evicted %v within the grace", f.evictions)
	}
	f.ext.PreemptOnce(context.Background(), start.Add(PreemptionGrace+time.Second))
	if !slices.Equal(f.evictions, []string{"ml/b"}) {
		t.Fatalf("evictions = %v, want [ml/b] (a has a PDB)", f.evictions)
	}
	a, ok := f.assignment(p)
	if !ok || a.Node != "n" || !slices.Equal(a.GPUs, []string{"GPU-n-1"}) || a.MemoryMiB != 60*gi {
		t.Fatalf("hold = %+v %v, want 60 GiB on GPU-n-1", a, ok)
	}
	want := "Normal Preempting p: evicting ml/b on node n to free 61440 MiB on GPU GPU-n-1 (the node's total fits, so kube-scheduler finds no victims)"
	if len(f.events) != 1 || f.events[0] != want {
		t.Fatalf("events = %q, want %q", f.events, want)
	}
	// b is gone from the API server (the fake client never had it) but
	// the informer has not said so yet: kube-scheduler, which saw the
	// deletion first, retries the preemptor, whose filter reads b afresh
	// and fits on its held GPU.
	nodes := []string{"n"}
	if res := f.ext.Filter(&extenderv1.ExtenderArgs{Pod: p, NodeNames: &nodes}); res.NodeNames == nil || len(*res.NodeNames) != 1 {
		t.Fatalf("preemptor after eviction: %+v", res)
	}
	// A pod of lower priority cannot take the GPU meanwhile.
	low := f.pending("low", 0, 40)
	f.fail(t, low, "n")
	// Nothing more is evicted.
	f.ext.PreemptOnce(context.Background(), start.Add(2*PreemptionGrace+time.Second))
	if len(f.evictions) != 1 {
		t.Fatalf("evictions = %v", f.evictions)
	}
}

// TestPreemptBlockedByPDB: when every choice violates a PDB, nothing is
// evicted and the pod gets a Warning.
func TestPreemptBlockedByPDB(t *testing.T) {
	f := newPreemptFixture(t, gpuNode("n", 1, 80))
	f.bound("a", 0, 50, "n", 0)
	f.pdb("a", 0)
	p := f.pending("p", 10, 40)
	f.fail(t, p, "n")
	f.ext.PreemptOnce(context.Background(), time.Now().Add(PreemptionGrace+time.Second))
	if len(f.evictions) != 0 {
		t.Fatalf("evicted %v despite the PDB", f.evictions)
	}
	want := "Warning PreemptionFailed p: pod needs 40960 MiB per GPU on 1 GPU(s): every choice of victims would violate a PodDisruptionBudget (1 violation(s) at best); not evicting"
	if len(f.events) != 1 || f.events[0] != want {
		t.Fatalf("events = %q, want %q", f.events, want)
	}
	if _, ok := f.assignment(p); ok {
		t.Fatal("GPUs held for a pod nothing was evicted for")
	}
}

// TestPreemptNotEligible: preemptionPolicy Never, equal priority, and a pod
// the scheduler nominated are left alone.
func TestPreemptNotEligible(t *testing.T) {
	f := newPreemptFixture(t, gpuNode("n", 1, 80))
	f.bound("a", 5, 50, "n", 0)
	never := f.pending("never", 10, 40)
	never.Spec.PreemptionPolicy = new(corev1.PreemptNever)
	same := f.pending("same", 5, 40)
	nominated := f.pending("nominated", 10, 40)
	nominated.Status.NominatedNodeName = "n"
	for _, p := range []*corev1.Pod{never, same, nominated} {
		f.fail(t, p, "n")
	}
	f.ext.PreemptOnce(context.Background(), time.Now().Add(PreemptionGrace+time.Second))
	if len(f.evictions) != 0 || len(f.events) != 0 {
		t.Fatalf("evictions %v, events %q", f.evictions, f.events)
	}
}

// TestPreemptEvictionRefused: a refused eviction stops the rest and is
// reported on the preemptor.
func TestPreemptEvictionRefused(t *testing.T) {
	f := newPreemptFixture(t, gpuNode("n", 1, 80))
	f.bound("a", 0, 30, "n", 0)
	f.bound("b", 0, 30, "n", 0)
	f.refuse["ml/a"] = fmt.Errorf("the API server said no")
	f.refuse["ml/b"] = fmt.Errorf("the API server said no")
	p := f.pending("p", 10, 70)
	f.fail(t, p, "n")
	f.ext.PreemptOnce(context.Background(), time.Now().Add(PreemptionGrace+time.Second))
	if len(f.evictions) != 0 {
		t.Fatalf("evictions = %v", f.evictions)
	}
	if len(f.events) != 2 || !strings.HasPrefix(f.events[0], "Warning PreemptionFailed p: evicting ml/") || !strings.HasSuffix(f.events[0], "failed: the API server said no") {
		t.Fatalf("events = %q", f.events)
	}
}

// TestPreemptHoldsNominated: after the scheduler preempted through the verb
// and nominated the pod, the extender holds the GPU the terminating victims
// free for it.
func TestPreemptHoldsNominated(t *testing.T) {
	f := newPreemptFixture(t, gpuNode("n", 2, 80))
	a := f.bound("a", 0, 80, "n", 0)
	f.bound("b", 0, 80, "n", 1)
	p := f.pending("p", 10, 60)
	res := f.ext.Preempt(&extenderv1.ExtenderPreemptionArgs{Pod: p, NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{"n": {}}})
	if len(metaUIDs(res.NodeNameToMetaVictims["n"])) != 1 {
		t.Fatalf("victims = %+v", res.NodeNameToMetaVictims)
	}
	// The scheduler deletes its choice and nominates the pod.
	victim := a
	if metaUIDs(res.NodeNameToMetaVictims["n"])[0] != string(a.UID) {
		victim = f.pods["ml/b"]
	}
	gone := victim.DeepCopy()
	gone.DeletionTimestamp = &metav1.Time{Time: now}
	f.put(gone)
	nominated := p.DeepCopy()
	nominated.Status.NominatedNodeName = "n"
	f.put(nominated)
	f.ext.PreemptOnce(context.Background(), time.Now())
	h, ok := f.assignment(p)
	if !ok || !slices.Equal(h.GPUs, []string{victim.Annotations[api.AnnotationGPUIDs]}) {
		t.Fatalf("hold = %+v %v, want the victim's GPU %s", h, ok, victim.Annotations[api.AnnotationGPUIDs])
	}
	if len(f.evictions) != 0 {
		t.Fatalf("the extender evicted %v itself", f.evictions)
	}
}
