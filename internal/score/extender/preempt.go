package extender

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
	"github.com/mlplane/mlplane/internal/score/state"
)

// PathPreempt is the preempt verb's path (the scheduler configuration's
// preemptVerb).
const PathPreempt = "/preempt"

// Preemption timing.
const (
	// PreemptionGrace is how long after its filter failed a pod is left to
	// kube-scheduler's own preemption before the extender evicts for it:
	// the scheduler preempts in the same scheduling cycle, right after the
	// filter, and nominates the pod when it does.
	PreemptionGrace = 2 * time.Second
	// PreemptionHoldTTL bounds how long the GPUs a preemption frees stay
	// held for its preemptor: the victims' termination grace period (30 s
	// by default) and a scheduling retry fit well inside.
	PreemptionHoldTTL = 2 * time.Minute
	// PreemptionInterval is how often RunPreemption looks at the pods
	// waiting for room.
	PreemptionInterval = time.Second
	// preemptionRetry is how long the extender leaves a pod it preempted
	// for, or could not, before it looks at it again.
	preemptionRetry = time.Minute
)

// Event reasons on the preemptor pod.
const (
	ReasonPreempting       = "Preempting"
	ReasonPreemptionFailed = "PreemptionFailed"
)

// EventRecorder is the part of client-go's events.EventRecorder the
// extender uses.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// preemptorEntry is a pending pod the extender may preempt for.
type preemptorEntry struct {
	namespace, name string
	priority        int32
	// nodes are those the filter failed with a resolvable reason (the
	// scheduler's own filters passed them).
	nodes []string
	at    time.Time
}

// preemption is the extender's preemption bookkeeping.
type preemption struct {
	mu sync.Mutex
	// failed: pods no node could take, by UID.
	failed map[types.UID]preemptorEntry
	// answered: pods the preempt verb answered for (kube-scheduler is
	// preempting for them), by UID.
	answered map[types.UID]preemptorEntry
	// done: pods the extender evicted for, or gave up on, until when.
	done map[types.UID]time.Time
	// victims: for each preemptor, the victims chosen for it by node.
	victims map[types.UID]victimRecord
}

// victimRecord is a preemptor and the victims chosen for it, by node.
type victimRecord struct {
	preemptor preemptorEntry
	byNode    map[string][]victimRef
}

// victimRef names a pod chosen as a victim.
type victimRef struct {
	namespace, name string
	uid             types.UID
}

func newPreemption() *preemption {
	return &preemption{failed: map[types.UID]preemptorEntry{}, answered: map[types.UID]preemptorEntry{},
		done: map[types.UID]time.Time{}, victims: map[types.UID]victimRecord{}}
}

// noteVictims records the victims chosen for pod on node.
func (p *preemption) noteVictims(pod *corev1.Pod, node string, vs []victimRef) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.victims[pod.UID]
	if !ok {
		r = victimRecord{preemptor: preemptorEntry{namespace: pod.Namespace, name: pod.Name, at: time.Now()}, byNode: map[string][]victimRef{}}
		p.victims[pod.UID] = r
	}
	r.byNode[node] = vs
}

// victimsOf is what noteVictims recorded for preemptor.
func (p *preemption) victimsOf(preemptor types.UID) []victimRef {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []victimRef
	for _, vs := range p.victims[preemptor].byNode {
		out = append(out, vs...)
	}
	return out
}

// refreshVictims makes the state forget the victims of preemptor that the
// API server no longer has, before the preemptor's filter. kube-scheduler
// retries the preemptor when it sees a victim deleted, which may be before
// the extender's informer sees it: the filter would then still count the
// victim, and nothing else would bring the pod back before the scheduler's
// periodic retry (5 minutes). A GET per victim still cached closes that
// race; the informer's own delete follows.
func (e *Extender) refreshVictims(preemptor types.UID) {
	vs := e.pre.victimsOf(preemptor)
	if len(vs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, v := range vs {
		if cached, ok := e.o.PodCache(v.namespace, v.name); !ok || cached.UID != v.uid {
			continue // the informer saw it go
		}
		p, err := e.o.Client.CoreV1().Pods(v.namespace).Get(ctx, v.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && p.UID != v.uid) {
			e.o.State.OnPodDelete(v.uid)
		}
	}
}

// noteFailed records a GPU pod the filter found no node for, with the nodes
// where removing pods could make room.
func (p *preemption) noteFailed(pod *corev1.Pod, nodes []string) {
	if pod.UID == "" || len(nodes) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.failed[pod.UID]; ok {
		// Keep the first failure's time: the grace runs from it.
		e := p.failed[pod.UID]
		e.nodes = nodes
		p.failed[pod.UID] = e
		return
	}
	p.failed[pod.UID] = preemptorEntry{namespace: pod.Namespace, name: pod.Name, priority: corev1helpers.PodPriority(pod), nodes: nodes, at: time.Now()}
}

// Preempt answers kube-scheduler's preempt verb: for each node where the
// scheduler found victims by the node's total, it names the pods whose
// removal gives the preemptor room per GPU (score.Facts.SelectVictims),
// which may be other pods of that node than the scheduler's, and drops the
// nodes where no removal would. The scheduler then picks one of these
// nodes (fewest PodDisruptionBudget violations first), deletes its victims
// and nominates the pod there; the extender holds the GPUs the victims free
// for the pod (see RunPreemption).
//
// The scheduler asks only about nodes where its own check of the total
// found victims: for a node whose total still fits (the shortage is
// fragmentation across GPUs) it never asks, and RunPreemption acts instead.
func (e *Extender) Preempt(args *extenderv1.ExtenderPreemptionArgs) *extenderv1.ExtenderPreemptionResult {
	res := &extenderv1.ExtenderPreemptionResult{NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{}}
	if args.Pod == nil {
		return res
	}
	var nodes []string
	for n := range args.NodeNameToMetaVictims {
		nodes = append(nodes, n)
	}
	for n := range args.NodeNameToVictims {
		if args.NodeNameToMetaVictims[n] == nil {
			nodes = append(nodes, n)
		}
	}
	slices.Sort(nodes)
	placer := e.o.Policy.Placer()
	prio := corev1helpers.PodPriority(args.Pod)
	gpuPod := true
	e.o.State.View(func(c *score.Cluster, now int64) {
		f, ok, err := podFacts(placer, c, args.Pod)
		if !ok || err != nil {
			gpuPod = false
			return
		}
		for _, node := range nodes {
			v, ok := f.SelectVictims(node, c.Node(node), now, prio, e.victimCandidates(c, node))
			if !ok || len(v.Keys) == 0 {
				continue
			}
			mv := &extenderv1.MetaVictims{NumPDBViolations: int64(v.NumPDBViolations)}
			for _, k := range v.Keys {
				mv.Pods = append(mv.Pods, &extenderv1.MetaPod{UID: k})
			}
			res.NodeNameToMetaVictims[node] = mv
			if args.Pod.UID != "" {
				e.pre.noteVictims(args.Pod, node, e.victimRefs(node, v.Keys))
			}
		}
	})
	if !gpuPod {
		// Not ours to judge (the scheduler sends only pods asking for
		// the extender's resource): its victims stand.
		for n, v := range args.NodeNameToMetaVictims {
			res.NodeNameToMetaVictims[n] = v
		}
		for n, v := range args.NodeNameToVictims {
			if v == nil || res.NodeNameToMetaVictims[n] != nil {
				continue
			}
			mv := &extenderv1.MetaVictims{NumPDBViolations: v.NumPDBViolations}
			for _, p := range v.Pods {
				mv.Pods = append(mv.Pods, &extenderv1.MetaPod{UID: string(p.UID)})
			}
			res.NodeNameToMetaVictims[n] = mv
		}
		return res
	}
	e.o.Metrics.preemptions.WithLabelValues("scheduler").Inc()
	if args.Pod.UID != "" && len(res.NodeNameToMetaVictims) > 0 {
		e.pre.mu.Lock()
		e.pre.answered[args.Pod.UID] = preemptorEntry{namespace: args.Pod.Namespace, name: args.Pod.Name, priority: prio, at: time.Now()}
		delete(e.pre.failed, args.Pod.UID)
		e.pre.mu.Unlock()
	}
	return res
}

// victimRefs names the pods of node with the given UIDs.
func (e *Extender) victimRefs(node string, uids []string) []victimRef {
	byUID := map[string]*corev1.Pod{}
	for _, p := range e.o.PodsOnNode(node) {
		byUID[string(p.UID)] = p
	}
	var out []victimRef
	for _, u := range uids {
		if p, ok := byUID[u]; ok {
			out = append(out, victimRef{p.Namespace, p.Name, p.UID})
		}
	}
	return out
}

// victimCandidates lists the pods bound to node that hold GPUs, as
// score.VictimCandidate, with their PodDisruptionBudget violations computed
// as kube-scheduler does. c is read under the state's lock.
func (e *Extender) victimCandidates(c *score.Cluster, node string) []score.VictimCandidate {
	pods := e.o.PodsOnNode(node)
	type held struct {
		pod *corev1.Pod
		a   score.Assignment
	}
	var hs []held
	for _, p := range pods {
		if a, ok := c.Assignment(string(p.UID)); ok && len(a.GPUs) > 0 {
			hs = append(hs, held{p, a})
		}
	}
	// Most important first, as the scheduler counts PDB budgets.
	slices.SortFunc(hs, func(a, b held) int {
		pa, pb := corev1helpers.PodPriority(a.pod), corev1helpers.PodPriority(b.pod)
		if pa != pb {
			return int(pb) - int(pa)
		}
		return startTime(a.pod).Compare(startTime(b.pod))
	})
	allowed := map[types.UID]int32{}
	out := make([]score.VictimCandidate, 0, len(hs))
	for _, h := range hs {
		vc := score.VictimCandidate{
			Key: string(h.pod.UID), Assignment: h.a, Priority: corev1helpers.PodPriority(h.pod),
			Terminating: h.pod.DeletionTimestamp != nil,
		}
		if h.pod.Status.StartTime != nil {
			vc.StartTime = h.pod.Status.StartTime.UnixNano()
		}
		if !vc.Terminating {
			vc.ViolatesPDB = e.violatesPDB(h.pod, allowed)
		}
		out = append(out, vc)
	}
	return out
}

func startTime(p *corev1.Pod) time.Time {
	if p.Status.StartTime == nil {
		return time.Time{}
	}
	return p.Status.StartTime.Time
}

// violatesPDB reports whether removing pod takes one of its
// PodDisruptionBudgets below what it allows, using up budget in allowed
// (PDB UID -> disruptions left) as kube-scheduler's
// filterPodsWithPDBViolation does: a pod the budget already counts as
// disrupted uses none.
func (e *Extender) violatesPDB(pod *corev1.Pod, allowed map[types.UID]int32) bool {
	violates := false
	for _, pdb := range e.o.PDBs(pod.Namespace) {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		if _, disrupted := pdb.Status.DisruptedPods[pod.Name]; disrupted {
			continue
		}
		left, seen := allowed[pdb.UID]
		if !seen {
			left = pdb.Status.DisruptionsAllowed
		}
		left--
		allowed[pdb.UID] = left
		if left < 0 {
			violates = true
		}
	}
	return violates
}

// RunPreemption works, every interval while this replica is ready (the
// leader), for pods of higher priority that no node can take:
//
//   - A pod kube-scheduler preempted for (through the preempt verb) and
//     nominated to a node gets the GPUs its victims free held for it on that
//     node, so that no pod of lower priority is placed there meanwhile.
//   - A pod the filter found no room for, that the scheduler did not
//     preempt for within PreemptionGrace (the node's total still fits, so
//     the scheduler found no victims and never asked), gets victims chosen
//     per GPU on the nodes the scheduler's own filters passed, on the best
//     node by score.Victims.Better. They are evicted through the Eviction
//     API, which enforces PodDisruptionBudgets: a choice that would violate
//     one is not made, and the pod gets a PreemptionFailed event instead.
//     The freed GPUs are held for the pod as above, and it gets a
//     Preempting event naming its victims.
//
// It returns when ctx ends.
func (e *Extender) RunPreemption(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if e.o.Ready() && e.o.Leader() {
			e.PreemptOnce(ctx, time.Now())
		}
	}, interval)
}

// PreemptOnce is one round of RunPreemption at time now.
func (e *Extender) PreemptOnce(ctx context.Context, now time.Time) {
	e.holdNominated(now)
	e.forgetPlaced()
	e.pre.mu.Lock()
	var due []types.UID
	for uid, en := range e.pre.failed {
		if now.Sub(en.at) >= PreemptionGrace {
			due = append(due, uid)
		}
	}
	for uid, until := range e.pre.done {
		if now.After(until) {
			delete(e.pre.done, uid)
		}
	}
	entries := make(map[types.UID]preemptorEntry, len(due))
	for _, uid := range due {
		entries[uid] = e.pre.failed[uid]
	}
	e.pre.mu.Unlock()
	// Highest priority first, then the longest waiting.
	slices.SortFunc(due, func(a, b types.UID) int {
		ea, eb := entries[a], entries[b]
		if ea.priority != eb.priority {
			return int(eb.priority) - int(ea.priority)
		}
		return ea.at.Compare(eb.at)
	})
	minPrio := map[string]int32{} // per node, for this round
	for _, uid := range due {
		e.preemptFor(ctx, uid, entries[uid], now, minPrio)
	}
}

// lowestPriority is the lowest priority of the pods bound to node that hold
// GPUs and are not terminating (math.MaxInt32 when none), cached in seen
// for one round: a backlog of pods that cannot preempt anyone (priority 0
// batch work, say) then costs a map lookup per node, not a victim search.
func (e *Extender) lowestPriority(node string, seen map[string]int32) int32 {
	if p, ok := seen[node]; ok {
		return p
	}
	low := int32(math.MaxInt32)
	for _, p := range e.o.PodsOnNode(node) {
		if p.DeletionTimestamp == nil && p.Annotations[api.AnnotationGPUIDs] != "" {
			low = min(low, corev1helpers.PodPriority(p))
		}
	}
	seen[node] = low
	return low
}

// forgetPlaced drops the victims recorded for preemptors that are bound or
// gone.
func (e *Extender) forgetPlaced() {
	e.pre.mu.Lock()
	records := make(map[types.UID]preemptorEntry, len(e.pre.victims))
	for uid, r := range e.pre.victims {
		records[uid] = r.preemptor
	}
	e.pre.mu.Unlock()
	for uid, en := range records {
		if _, pending := e.pendingPod(uid, en); pending && time.Since(en.at) < PreemptionHoldTTL {
			continue
		}
		e.pre.mu.Lock()
		delete(e.pre.victims, uid)
		e.pre.mu.Unlock()
	}
}

// forget drops a pod from the failed list; with retry it is also left
// alone until now+preemptionRetry.
func (e *Extender) forget(uid types.UID, now time.Time, retry bool) {
	e.pre.mu.Lock()
	defer e.pre.mu.Unlock()
	delete(e.pre.failed, uid)
	if retry {
		e.pre.done[uid] = now.Add(preemptionRetry)
	}
}

// pendingPod is the cached pod behind an entry, when it still waits for a
// node under this uid.
func (e *Extender) pendingPod(uid types.UID, en preemptorEntry) (*corev1.Pod, bool) {
	pod, ok := e.o.PodCache(en.namespace, en.name)
	if !ok || pod.UID != uid || pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil ||
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, false
	}
	return pod, true
}

// holdNominated holds, for each pod the preempt verb answered for and the
// scheduler nominated, the GPUs it gets on its nominated node once the
// victims are gone.
func (e *Extender) holdNominated(now time.Time) {
	e.pre.mu.Lock()
	answered := make(map[types.UID]preemptorEntry, len(e.pre.answered))
	for uid, en := range e.pre.answered {
		answered[uid] = en
	}
	e.pre.mu.Unlock()
	placer := e.o.Policy.Placer()
	for uid, en := range answered {
		pod, ok := e.pendingPod(uid, en)
		if !ok || now.Sub(en.at) > PreemptionHoldTTL {
			e.pre.mu.Lock()
			delete(e.pre.answered, uid)
			e.pre.mu.Unlock()
			continue
		}
		node := pod.Status.NominatedNodeName
		if node == "" {
			continue
		}
		_ = e.o.State.Update(func(t state.Txn, nowNs int64) error {
			c := t.Cluster()
			if a, has := c.Assignment(string(uid)); has && a.Node == node {
				return nil // held already
			}
			f, ok, err := podFacts(placer, c, pod)
			if !ok || err != nil {
				return nil
			}
			v, ok := f.SelectVictims(node, c.Node(node), nowNs, corev1helpers.PodPriority(pod), e.victimCandidates(c, node))
			if ok && len(v.Keys) == 0 && len(v.GPUs) > 0 {
				t.Hold(uid, score.Assignment{Node: node, GPUs: v.GPUs, MemoryMiB: f.Request().MemoryMiB}, PreemptionHoldTTL)
			}
			return nil
		})
	}
}

// preemptFor chooses victims for one pod the filter found no room for, and
// evicts them.
func (e *Extender) preemptFor(ctx context.Context, uid types.UID, en preemptorEntry, now time.Time, minPrio map[string]int32) {
	pod, ok := e.pendingPod(uid, en)
	if !ok {
		e.forget(uid, now, false)
		return
	}
	e.pre.mu.Lock()
	_, answered := e.pre.answered[uid]
	_, done := e.pre.done[uid]
	e.pre.mu.Unlock()
	switch {
	case answered || done:
		e.forget(uid, now, false) // the scheduler preempts for it, or we did
		return
	case pod.Status.NominatedNodeName != "":
		e.forget(uid, now, false) // the scheduler's preemption is under way
		return
	case pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy == corev1.PreemptNever:
		e.forget(uid, now, true)
		return
	}
	prio := corev1helpers.PodPriority(pod)
	var nodes []string
	for _, n := range en.nodes {
		if e.lowestPriority(n, minPrio) < prio {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		e.forget(uid, now, true) // no pod of lower priority anywhere it could go
		return
	}
	placer := e.o.Policy.Placer()
	var (
		best     score.Victims
		bestNode string
		blocked  score.Victims // the best choice, when every choice violates a PDB
		fitsNow  bool
		mem      int64
		count    int
		held     bool
	)
	err := e.o.State.Update(func(t state.Txn, nowNs int64) error {
		c := t.Cluster()
		if _, has := c.Assignment(string(uid)); has {
			held = true // a hold or a bind is under way for it
			return nil
		}
		f, ok, err := podFacts(placer, c, pod)
		if !ok || err != nil {
			return err
		}
		mem, count = f.Request().MemoryMiB, f.Request().Count
		for _, node := range nodes {
			v, ok := f.SelectVictims(node, c.Node(node), nowNs, prio, e.victimCandidates(c, node))
			switch {
			case !ok:
				continue
			case len(v.Keys) == 0:
				fitsNow = true // room once terminating pods are gone
				return nil
			case v.NumPDBViolations > 0:
				if blocked.Keys == nil || v.Better(blocked) {
					blocked = v
				}
			case bestNode == "" || v.Better(best):
				best, bestNode = v, node
			}
		}
		if bestNode != "" {
			t.Hold(uid, score.Assignment{Node: bestNode, GPUs: best.GPUs, MemoryMiB: mem}, PreemptionHoldTTL)
		}
		return nil
	})
	switch {
	case err != nil || held || fitsNow:
		e.forget(uid, now, false)
		return
	case bestNode == "":
		e.forget(uid, now, true)
		if blocked.Keys != nil {
			e.event(pod, corev1.EventTypeWarning, ReasonPreemptionFailed, "Preempt",
				"pod needs %d MiB per GPU on %d GPU(s): every choice of victims would violate a PodDisruptionBudget (%d violation(s) at best); not evicting",
				mem, count, blocked.NumPDBViolations)
		}
		return
	}
	e.forget(uid, now, true)
	victims := e.victimRefs(bestNode, best.Keys)
	e.pre.noteVictims(pod, bestNode, victims)
	e.o.Metrics.preemptions.WithLabelValues("extender").Inc()
	names := e.evict(ctx, pod, victims)
	e.event(pod, corev1.EventTypeNormal, ReasonPreempting, "Preempt",
		"evicting %s on node %s to free %d MiB on GPU %s (the node's total fits, so kube-scheduler finds no victims)",
		strings.Join(names, ", "), bestNode, mem, strings.Join(best.GPUs, ","))
}

// evict evicts the victims through the Eviction API and returns their
// names; a victim gone already is skipped, a refused eviction is logged and
// stops the rest.
func (e *Extender) evict(ctx context.Context, preemptor *corev1.Pod, victims []victimRef) []string {
	var names []string
	for _, v := range victims {
		names = append(names, v.namespace+"/"+v.name)
		ev := &policyv1.Eviction{
			ObjectMeta:    metav1.ObjectMeta{Namespace: v.namespace, Name: v.name},
			DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &v.uid}},
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := e.o.Client.PolicyV1().Evictions(v.namespace).Evict(cctx, ev)
		cancel()
		switch {
		case err == nil:
			e.o.Metrics.preemptionVictims.Inc()
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			// gone already
		default:
			e.o.Logger.Error(err, "evicting a preemption victim failed", "victim", names[len(names)-1], "preemptor", klogRef(preemptor))
			e.event(preemptor, corev1.EventTypeWarning, ReasonPreemptionFailed, "Preempt", "evicting %s failed: %v", names[len(names)-1], err)
			return names
		}
	}
	return names
}

func (e *Extender) event(pod *corev1.Pod, eventtype, reason, action, note string, args ...any) {
	if e.o.Events != nil {
		e.o.Events.Eventf(pod, nil, eventtype, reason, action, note, args...)
	}
	e.o.Logger.Info("Preemption", "pod", klogRef(pod), "reason", reason, "note", fmt.Sprintf(note, args...))
}

func klogRef(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }
