// Package state keeps the extender's picture of the cluster: the placement
// bookkeeping of package score, fed by informers on Nodes (inventory), node
// agent Leases and Pods (assignments), plus short-lived reservations for pods
// the extender has bound but the informer has not yet seen.
//
// The informer-fed record is the truth that survives restarts: a pod's
// assignment is its AnnotationGPUIDs plus its GPU request, and it counts until
// the pod is deleted or terminal, whether or not it is bound yet (the
// extender writes the annotation and the node in one atomic Binding, but a
// pod annotated otherwise keeps its GPUs until a bind re-picks them). Once
// the pod is bound its booking is fixed: later edits of its annotations
// neither move nor shrink it (see OnPod).
//
// What other parties write is judged as kube-controller-manager judges it:
// a node agent's Lease by when this process saw it renewed, on its own
// clock, never by the agent's clock (OnLease); a GPU that two nodes publish
// is used on neither (OnNode).
package state

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
)

// DefaultReservationTTL bounds how long a reservation outlives its bind when
// the informer never confirms it (the pod vanished between two watches).
const DefaultReservationTTL = 2 * time.Minute

// State is safe for concurrent use. Readers (filter, prioritize) share a read
// lock; a bind picks and reserves under the write lock, so two binds never
// pick the same free memory.
type State struct {
	mu       sync.RWMutex
	cluster  *score.Cluster
	seen     map[types.UID]score.Assignment
	reserved map[types.UID]reservation
	// bound is the booking of each bound pod, fixed when the extender
	// first saw it bound (joined with the reservation of its own bind):
	// what cannot change after bind. differs is the last view of a bound
	// pod's annotations that disagreed with it, so each edit is logged
	// once; edits counts those edits.
	bound   map[types.UID]score.Assignment
	differs map[types.UID]string
	edits   atomic.Int64
	// inventories is each node's published inventory, gpuNodes the nodes
	// publishing each GPU UUID (more than one: used on none) and conflicts
	// the UUIDs logged as published twice.
	inventories map[string]inventory
	gpuNodes    map[string][]string
	conflicts   map[string]bool
	// leases is, per node, the agent's last renewTime and the expiry
	// judged from it on this process's clock.
	leases map[string]leaseSeen
	now    func() time.Time
	ttl    time.Duration
	log    logr.Logger
	// pods is the pod informer's cache, once Start has run.
	pods atomic.Pointer[podStore]
}

// inventory is what a node's agent publishes: its GPUs, or the problem
// with its annotation.
type inventory struct {
	gpus    []api.GPU
	problem string
}

// leaseSeen is a node agent's Lease as last seen: the renewTime the agent
// wrote and the expiry this process gave it.
type leaseSeen struct {
	renewed metav1.MicroTime
	expiry  int64
}

type reservation struct {
	a       score.Assignment
	expires time.Time
	// hold marks the filter's reservation (Hold).
	hold bool
}

// Options configure a State.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ReservationTTL (default DefaultReservationTTL).
	ReservationTTL time.Duration
	// Logger (default: discard).
	Logger logr.Logger
}

// New returns an empty State.
func New(o Options) *State {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ReservationTTL == 0 {
		o.ReservationTTL = DefaultReservationTTL
	}
	return &State{
		cluster: score.NewCluster(), seen: map[types.UID]score.Assignment{},
		reserved: map[types.UID]reservation{}, bound: map[types.UID]score.Assignment{}, differs: map[types.UID]string{},
		inventories: map[string]inventory{}, gpuNodes: map[string][]string{}, conflicts: map[string]bool{},
		leases: map[string]leaseSeen{}, now: o.Now, ttl: o.ReservationTTL, log: o.Logger,
	}
}

// View runs fn with the cluster under the read lock; now is the current time
// in Unix nanoseconds, for Lease freshness. fn must not keep the cluster.
func (s *State) View(fn func(c *score.Cluster, now int64)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fn(s.cluster, s.now().UnixNano())
}

// Txn is the write-locked state during Update.
type Txn struct{ s *State }

// Cluster is the bookkeeping; valid only inside Update.
func (t Txn) Cluster() *score.Cluster { return t.s.cluster }

// Reserve records a's claim for pod uid until the informer sees the pod
// carrying it, Release is called, or the reservation expires. A pod whose
// booking is fixed (bound) keeps it: the reservation is not made.
func (t Txn) Reserve(uid types.UID, a score.Assignment) {
	if _, fixed := t.s.bound[uid]; fixed {
		return
	}
	t.s.reserved[uid] = reservation{a: a, expires: t.s.now().Add(t.s.ttl)}
	t.s.apply(uid)
}

// Hold is the filter's reservation, made before the bind: like Reserve but
// for ttl, and it gives way to everything else. It never replaces a bind's
// reservation or an assignment the informer saw (a bind whose answer was
// lost may have landed with other GPUs), a bind's Reserve replaces it, and
// the informer showing the pod with any GPUs drops it. It reports whether
// it held.
func (t Txn) Hold(uid types.UID, a score.Assignment, ttl time.Duration) bool {
	if r, ok := t.s.reserved[uid]; ok && !r.hold {
		return false
	}
	if _, ok := t.s.seen[uid]; ok {
		return false
	}
	t.s.reserved[uid] = reservation{a: a, expires: t.s.now().Add(ttl), hold: true}
	t.s.apply(uid)
	return true
}

// Update runs fn under the write lock; now as in View.
func (s *State) Update(fn func(t Txn, now int64) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(Txn{s}, s.now().UnixNano())
}

// Release drops pod uid's reservation (a bind that failed); what the
// informer last saw of the pod counts again.
func (s *State) Release(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, uid)
	s.apply(uid)
}

// ReleaseHold drops uid's reservation if it is a filter's hold (Hold),
// not a bind's.
func (s *State) ReleaseHold(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.reserved[uid]; ok && r.hold {
		delete(s.reserved, uid)
		s.apply(uid)
	}
}

// BindReserved reports whether uid has a bind's reservation (Reserve, not
// a filter's Hold): an earlier bind whose outcome is not known yet.
func (s *State) BindReserved(uid types.UID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.reserved[uid]
	return ok && !r.hold
}

// Reservations is the number of pending reservations.
func (s *State) Reservations() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.reserved)
}

// Sweep drops expired reservations.
func (s *State) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for uid, r := range s.reserved {
		if now.After(r.expires) {
			s.log.V(1).Info("reservation expired unconfirmed", "podUID", uid, "gpus", r.a.GPUs)
			delete(s.reserved, uid)
			s.apply(uid)
		}
	}
}

// apply makes the cluster hold pod uid's effective assignment: its
// reservation if any, else what the informer saw.
func (s *State) apply(uid types.UID) {
	key := string(uid)
	if r, ok := s.reserved[uid]; ok {
		s.cluster.Assign(key, r.a)
	} else if a, ok := s.seen[uid]; ok {
		s.cluster.Assign(key, a)
	} else {
		s.cluster.Unassign(key)
	}
}

// Assignment reads a pod's recorded assignment from the object: ok is false
// for a pod that holds no GPU (no AnnotationGPUIDs, no GPU request at all, or
// terminal).
//
// A pod that holds GPUs but whose GPU request is invalid (an annotation
// edited after admission to a value such as 8Ei or "lots", or a webhook that
// did not run) is booked from what its containers were given at creation,
// which cannot change: their mlplane.io/gpu-memory request
// (score.ContainerRequestMiB) on each GPU it names, divided by the number of
// GPUs and rounded up (for a pod the webhook wired, the annotation's value as
// it was at creation). Without such a request it books every GPU it names
// whole: MemoryMiB is api.MaxGPUMemoryMiB, more than any GPU has, so nothing
// else is placed there until the pod is fixed or deleted. invalid says why.
// Dropping the pod from the bookings instead would let other pods onto
// memory the pod may be using; a negative or wrapped value would free other
// pods' memory.
func Assignment(pod *corev1.Pod) (a score.Assignment, ok bool, invalid error) {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return score.Assignment{}, false, nil
	}
	ids := api.ParseGPUIDs(pod.Annotations[api.AnnotationGPUIDs])
	if len(ids) == 0 {
		return score.Assignment{}, false, nil
	}
	req, ok, err := score.PodRequest(pod)
	switch {
	case err != nil:
		mem := int64(api.MaxGPUMemoryMiB)
		if total, given := score.ContainerRequestMiB(pod); given {
			n := int64(len(ids))
			mem = min(mem, (total+n-1)/n)
		}
		return score.Assignment{Node: pod.Spec.NodeName, GPUs: ids, MemoryMiB: mem}, true, err
	case !ok:
		return score.Assignment{}, false, nil
	}
	return score.Assignment{Node: pod.Spec.NodeName, GPUs: ids, MemoryMiB: req.MemoryMiB}, true, nil
}

// OnPod records a pod as the informer sees it.
//
// A bound pod's booking is fixed the first time the informer shows it bound
// with GPUs: its GPUs and memory as annotated then, joined with the
// reservation of the extender's own bind when the two differ (an edit
// between the Binding and the informer; the booking then covers both).
// From then on, until the pod is terminal or deleted, the booking follows
// what cannot change after bind, not the annotations: an edit that shrinks
// mlplane.io/gpu-memory, or makes it or gpu-ids invalid or absent, is
// logged once and ignored; the containers keep the memory the webhook gave
// them. An edit that moves gpu-ids to other GPUs of the pod's node only adds
// them to the booking (keepBooking): a container restarted after it runs
// there. The admission policy mlplane-gpu-assignment refuses such edits in
// the first place; this is for clusters without it.
func (s *State) OnPod(pod *corev1.Pod) {
	a, ok, invalid := Assignment(pod)
	terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	s.mu.Lock()
	defer s.mu.Unlock()
	f, fixed := s.bound[pod.UID]
	switch {
	case fixed && !terminal:
		a, ok, invalid = s.keepBooking(pod, f, a, ok), true, nil
	case ok && !terminal && pod.Spec.NodeName != "":
		if r, has := s.reserved[pod.UID]; has && !r.hold && !sameBooking(r.a, a) {
			s.log.Info("pod is bound with other GPUs than its bind reserved; booking both", "pod", klogRef(pod), "reserved", r.a.GPUs, "reservedMiB", r.a.MemoryMiB, "annotated", a.GPUs, "annotatedMiB", a.MemoryMiB)
			a = joinBookings(r.a, a)
		}
		a.GPUs = slices.Clone(a.GPUs)
		s.bound[pod.UID] = a
		fixed = true
	}
	switch {
	case invalid != nil:
		s.log.Info("pod has GPUs assigned but an invalid GPU request; booked from its containers' request (each GPU whole without one) until it is fixed or deleted", "pod", klogRef(pod), "gpus", a.GPUs, "bookedMiB", a.MemoryMiB, "error", invalid.Error())
	case !ok && pod.Annotations[api.AnnotationGPUIDs] != "" && !terminal:
		s.log.Info("pod has GPUs assigned but no GPU request; not counted", "pod", klogRef(pod))
	}
	switch {
	case ok:
		s.seen[pod.UID] = a
		if r, has := s.reserved[pod.UID]; has && (r.hold || fixed || slices.Equal(r.a.GPUs, a.GPUs)) {
			delete(s.reserved, pod.UID) // confirmed, folded into the fixed booking, or a hold the pod's own GPUs overrule
		}
	case terminal:
		delete(s.seen, pod.UID)
		delete(s.reserved, pod.UID)
		delete(s.bound, pod.UID)
		delete(s.differs, pod.UID)
	default:
		// No annotation (yet): an older version of a pod being bound
		// must not drop its reservation.
		delete(s.seen, pod.UID)
	}
	s.apply(pod.UID)
}

// keepBooking is a bound pod's booking after an update whose annotations
// say a (ok false: they say nothing valid): its fixed booking f, grown by
// the GPUs of the pod's own node that gpu-ids now names and f does not. A
// container restarted after such an edit runs on those GPUs
// (NVIDIA_VISIBLE_DEVICES comes from the annotation), with the memory it
// was given at creation, so that memory is booked there too, and stays
// booked on f's GPUs, where the running containers are. GPUs of other
// nodes, which the pod cannot use, are not booked. It logs, once per
// distinct view, annotations that no longer say what the booking is.
func (s *State) keepBooking(pod *corev1.Pod, f, a score.Assignment, ok bool) score.Assignment {
	if ok && sameBooking(a, f) {
		delete(s.differs, pod.UID)
		return f
	}
	var added []string
	if ok {
		for _, id := range a.GPUs {
			if !slices.Contains(f.GPUs, id) && slices.Contains(s.gpuNodes[id], pod.Spec.NodeName) {
				added = append(added, id)
			}
		}
	}
	if len(added) > 0 {
		f.GPUs = append(slices.Clone(f.GPUs), added...)
		s.bound[pod.UID] = f
	}
	view := pod.Annotations[api.AnnotationGPUIDs] + "|" + pod.Annotations[api.AnnotationGPUMemory] + "|" + pod.Annotations[api.AnnotationGPUCount]
	if s.differs[pod.UID] == view {
		return f
	}
	s.differs[pod.UID] = view
	s.edits.Add(1)
	msg := "bound pod's GPU annotations were changed; its booking stays as fixed at bind"
	if len(added) > 0 {
		msg = "bound pod's gpu-ids were changed to GPUs of its node it was not booked on; booked there too, and the booking at bind stays"
	}
	s.log.Info(msg, "pod", klogRef(pod), "bookedGPUs", f.GPUs, "bookedMiB", f.MemoryMiB, "addedGPUs", added,
		api.AnnotationGPUIDs, pod.Annotations[api.AnnotationGPUIDs], api.AnnotationGPUMemory, pod.Annotations[api.AnnotationGPUMemory], api.AnnotationGPUCount, pod.Annotations[api.AnnotationGPUCount])
	return f
}

// BookingEdits is how many times a bound pod's GPU annotations were seen
// changed away from its fixed booking (each distinct edit once).
func (s *State) BookingEdits() int64 { return s.edits.Load() }

func sameBooking(a, b score.Assignment) bool {
	return a.MemoryMiB == b.MemoryMiB && slices.Equal(a.GPUs, b.GPUs)
}

// joinBookings books both: the GPUs of a, then those of b not in a, each
// with the larger memory.
func joinBookings(a, b score.Assignment) score.Assignment {
	out := score.Assignment{Node: a.Node, GPUs: slices.Clone(a.GPUs), MemoryMiB: max(a.MemoryMiB, b.MemoryMiB)}
	if b.Node != "" {
		out.Node = b.Node
	}
	for _, id := range b.GPUs {
		if !slices.Contains(out.GPUs, id) {
			out.GPUs = append(out.GPUs, id)
		}
	}
	return out
}

// OnPodDelete forgets a pod.
func (s *State) OnPodDelete(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, uid)
	delete(s.reserved, uid)
	delete(s.bound, uid)
	delete(s.differs, uid)
	s.apply(uid)
}

// Seed adds reservations for assignments a fresh, consistent list of pods
// shows and the informer has not delivered yet, so that a new leader or a
// restarted process never books GPUs its predecessor booked last.
func (s *State) Seed(pods []corev1.Pod) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for i := range pods {
		p := &pods[i]
		a, ok, _ := Assignment(p)
		if !ok {
			continue
		}
		if _, fixed := s.bound[p.UID]; fixed {
			continue
		}
		if cur, has := s.seen[p.UID]; has && slices.Equal(cur.GPUs, a.GPUs) {
			continue
		}
		if _, has := s.reserved[p.UID]; has {
			continue
		}
		s.reserved[p.UID] = reservation{a: a, expires: s.now().Add(s.ttl)}
		s.apply(p.UID)
		n++
	}
	return n
}

// NodeProblemNoInventory is the filter reason for a node the agent has not
// annotated.
var NodeProblemNoInventory = fmt.Sprintf("node has no %s annotation (is the mlplane node agent running there?)", api.NodeAnnotationGPUs)

// OnNode records a node's inventory.
//
// GPU UUIDs are unique across a cluster: a UUID that two nodes publish (an
// agent that lies, or reports a GPU another node holds) is used on neither
// until only one publishes it, and logged. Trusting either could book one
// GPU's memory twice, on two nodes; neither node's other GPUs are affected.
func (s *State) OnNode(node *corev1.Node) {
	var gpus []api.GPU
	problem := NodeProblemNoInventory
	if v, ok := node.Annotations[api.NodeAnnotationGPUs]; ok {
		var err error
		if gpus, err = api.DecodeInventory(v); err != nil {
			problem = err.Error()
		} else {
			problem = ""
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	affected := s.unpublish(node.Name)
	s.inventories[node.Name] = inventory{gpus: gpus, problem: problem}
	for _, g := range gpus {
		s.gpuNodes[g.UUID] = append(s.gpuNodes[g.UUID], node.Name)
		affected = append(affected, s.gpuNodes[g.UUID]...)
	}
	s.setNodes(append(affected, node.Name))
}

// OnNodeDelete forgets a node.
func (s *State) OnNodeDelete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	affected := s.unpublish(name)
	delete(s.inventories, name)
	s.cluster.DeleteNode(name)
	s.setNodes(affected)
}

// unpublish removes node's GPUs from gpuNodes and returns the nodes that
// published any of them too.
func (s *State) unpublish(node string) []string {
	var others []string
	for _, g := range s.inventories[node].gpus {
		rest := slices.DeleteFunc(s.gpuNodes[g.UUID], func(n string) bool { return n == node })
		if len(rest) == 0 {
			delete(s.gpuNodes, g.UUID)
		} else {
			s.gpuNodes[g.UUID] = rest
			others = append(others, rest...)
		}
	}
	return others
}

// setNodes gives each of nodes (once each) its inventory less the GPUs
// another node publishes too.
func (s *State) setNodes(nodes []string) {
	slices.Sort(nodes)
	for _, n := range slices.Compact(nodes) {
		inv, ok := s.inventories[n]
		if !ok {
			continue
		}
		gpus := inv.gpus
		var twice []string
		for _, g := range inv.gpus {
			if len(s.gpuNodes[g.UUID]) > 1 {
				twice = append(twice, g.UUID)
			} else {
				delete(s.conflicts, g.UUID)
			}
		}
		if len(twice) > 0 {
			gpus = slices.DeleteFunc(slices.Clone(gpus), func(g api.GPU) bool { return slices.Contains(twice, g.UUID) })
		}
		for _, id := range twice {
			if !s.conflicts[id] {
				s.conflicts[id] = true
				s.log.Info("GPU published by more than one node's agent; not used on any of them until only one publishes it", "gpu", id, "nodes", s.gpuNodes[id])
			}
		}
		s.cluster.SetNode(n, gpus, inv.problem)
	}
}

// leasePrefix is what api.LeaseName puts before the node name.
var leasePrefix = api.LeaseName("")

// LeaseNode is the node whose agent holds lease, or "" for another Lease.
func LeaseNode(lease *coordinationv1.Lease) string {
	if lease.Namespace != api.LeaseNamespace || !strings.HasPrefix(lease.Name, leasePrefix) {
		return ""
	}
	return strings.TrimPrefix(lease.Name, leasePrefix)
}

// OnLease records a node agent's Lease: the node's GPUs are schedulable until
// api.LeaseDuration after its last renewal, as this process's clock saw it.
//
// renewTime is the agent's clock, which may be ahead (a dead agent's Lease
// would look fresh for as long) or behind (a live node would look dead).
// As kube-controller-manager's node lifecycle controller does with kubelet
// Leases, a renewal counts when this process sees renewTime change, and it
// happened now; the value itself is only compared with the last one. The
// first sight of a Lease (at start-up) is as old as renewTime says, but
// never younger than now.
func (s *State) OnLease(lease *coordinationv1.Lease) {
	node := LeaseNode(lease)
	if node == "" {
		return
	}
	var renewed *metav1.MicroTime
	if lease.Spec.RenewTime != nil {
		renewed = lease.Spec.RenewTime
	} else if lease.Spec.AcquireTime != nil {
		renewed = lease.Spec.AcquireTime
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if renewed == nil {
		delete(s.leases, node)
		s.cluster.SetLease(node, score.NoLease)
		return
	}
	now := s.now()
	prev, seen := s.leases[node]
	var expiry int64
	switch {
	case !seen:
		expiry = minTime(now, renewed.Time).Add(api.LeaseDuration).UnixNano()
	case !renewed.Equal(&prev.renewed):
		expiry = now.Add(api.LeaseDuration).UnixNano()
	default:
		expiry = prev.expiry // an update that renewed nothing
	}
	s.leases[node] = leaseSeen{renewed: *renewed, expiry: expiry}
	s.cluster.SetLease(node, expiry)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// OnLeaseDelete records that a node's agent Lease is gone.
func (s *State) OnLeaseDelete(lease *coordinationv1.Lease) {
	if node := LeaseNode(lease); node != "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.leases, node)
		s.cluster.SetLease(node, score.NoLease)
	}
}

func klogRef(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }
