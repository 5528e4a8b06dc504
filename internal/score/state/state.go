// Package state keeps the extender's picture of the cluster: the placement
// bookkeeping of package score, fed by informers on Nodes (inventory), node
// agent Leases and Pods (assignments), plus short-lived reservations for pods
// the extender has bound but the informer has not yet seen.
//
// The informer-fed record is the truth that survives restarts: a pod's
// assignment is its AnnotationGPUIDs plus its GPU request, and it counts until
// the pod is deleted or terminal, whether or not it is bound yet (the
// extender writes the annotation and the node in one atomic Binding, but a
// pod annotated otherwise keeps its GPUs until a bind re-picks them).
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
	now      func() time.Time
	ttl      time.Duration
	log      logr.Logger
	// pods is the pod informer's cache, once Start has run.
	pods atomic.Pointer[podStore]
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
		reserved: map[types.UID]reservation{}, now: o.Now, ttl: o.ReservationTTL, log: o.Logger,
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
// carrying it, Release is called, or the reservation expires.
func (t Txn) Reserve(uid types.UID, a score.Assignment) {
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
// did not run) books every GPU it names whole: MemoryMiB is
// api.MaxGPUMemoryMiB, more than any GPU has, so nothing else is placed
// there until the pod is fixed or deleted, and invalid says why. Dropping
// the pod from the bookings instead would let other pods onto memory the
// pod may be using; a negative or wrapped value would free other pods'
// memory.
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
		return score.Assignment{Node: pod.Spec.NodeName, GPUs: ids, MemoryMiB: api.MaxGPUMemoryMiB}, true, err
	case !ok:
		return score.Assignment{}, false, nil
	}
	return score.Assignment{Node: pod.Spec.NodeName, GPUs: ids, MemoryMiB: req.MemoryMiB}, true, nil
}

// OnPod records a pod as the informer sees it.
func (s *State) OnPod(pod *corev1.Pod) {
	a, ok, invalid := Assignment(pod)
	switch {
	case invalid != nil:
		s.log.Info("pod has GPUs assigned but an invalid GPU request; its GPUs are booked whole until it is fixed or deleted", "pod", klogRef(pod), "gpus", a.GPUs, "error", invalid.Error())
	case !ok && pod.Annotations[api.AnnotationGPUIDs] != "" && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed:
		s.log.Info("pod has GPUs assigned but no GPU request; not counted", "pod", klogRef(pod))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	switch {
	case ok:
		s.seen[pod.UID] = a
		if r, has := s.reserved[pod.UID]; has && (r.hold || slices.Equal(r.a.GPUs, a.GPUs)) {
			delete(s.reserved, pod.UID) // confirmed, or a hold the pod's own GPUs overrule
		}
	case terminal:
		delete(s.seen, pod.UID)
		delete(s.reserved, pod.UID)
	default:
		// No annotation (yet): an older version of a pod being bound
		// must not drop its reservation.
		delete(s.seen, pod.UID)
	}
	s.apply(pod.UID)
}

// OnPodDelete forgets a pod.
func (s *State) OnPodDelete(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, uid)
	delete(s.reserved, uid)
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
	s.cluster.SetNode(node.Name, gpus, problem)
}

// OnNodeDelete forgets a node.
func (s *State) OnNodeDelete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cluster.DeleteNode(name)
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
// api.LeaseDuration after its last renewal.
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
	expiry := score.NoLease
	if renewed != nil {
		expiry = renewed.Add(api.LeaseDuration).UnixNano()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cluster.SetLease(node, expiry)
}

// OnLeaseDelete records that a node's agent Lease is gone.
func (s *State) OnLeaseDelete(lease *coordinationv1.Lease) {
	if node := LeaseNode(lease); node != "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cluster.SetLease(node, score.NoLease)
	}
}

func klogRef(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }
