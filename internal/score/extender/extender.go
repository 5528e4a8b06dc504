// Package extender serves the kube-scheduler extender verbs (filter,
// prioritize, bind) over the placement core of package score and the
// informer-fed state of package state.
package extender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/client-go/kubernetes"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/mlplane/mlplane/internal/score"
	"github.com/mlplane/mlplane/internal/score/state"
)

// Paths of the verbs; the scheduler configuration names them.
const (
	PathFilter     = "/filter"
	PathPrioritize = "/prioritize"
	PathBind       = "/bind"
)

// PlacerSource hands out the current placement policy; a reload swaps it.
type PlacerSource interface {
	Placer() *score.Placer
}

// PlacerFunc adapts a function to PlacerSource.
type PlacerFunc func() *score.Placer

// Placer calls f.
func (f PlacerFunc) Placer() *score.Placer { return f() }

var _ PlacerSource = PlacerFunc(nil)

// Options configure an Extender.
type Options struct {
	// Client creates Bindings (required).
	Client kubernetes.Interface
	// State is the cluster picture (required).
	State *state.State
	// PodCache finds a pod in the informer's cache; bind reads the API
	// server only for a pod it does not hold (default: State.Pod).
	PodCache func(namespace, name string) (*corev1.Pod, bool)
	// Policy is the placement policy (default: score.DefaultPolicy()).
	Policy PlacerSource
	// PodsOnNode lists the pods bound to a node, for preemption (default:
	// State.PodsOnNode).
	PodsOnNode func(node string) []*corev1.Pod
	// PDBs lists the PodDisruptionBudgets of a namespace, for preemption
	// (default: none).
	PDBs func(namespace string) []*policyv1.PodDisruptionBudget
	// Events records the preemption events on pods (default: none).
	Events EventRecorder
	// Ready gates every verb: until it returns true the extender answers
	// with an error and the scheduler retries later (default: always ready).
	Ready func() bool
	// Leader gates bind: a replica that is not the leader refuses to bind
	// (default: always the leader).
	Leader func() bool
	// Metrics (default: a set registered nowhere).
	Metrics *Metrics
	// Logger (default: discard).
	Logger logr.Logger
	// MaxBodyBytes bounds a request body (default 64 MiB, room for a filter
	// call with Node objects of a large cluster).
	MaxBodyBytes int64
	// MaxConcurrentBinds bounds the binds working at once (default
	// DefaultMaxConcurrentBinds). kube-scheduler binds each pod on a
	// goroutine of its own; with a backlog of pods it starts binds faster
	// than the API server takes Bindings, and more binds at once only queue
	// in the client, where they outlive the scheduler's httpTimeout.
	MaxConcurrentBinds int
	// BindQueueTimeout is how long a bind waits for a free slot before it
	// is refused as busy, so that the scheduler retries the pod with its
	// back-off instead of giving up on a call that is still waiting
	// (default DefaultBindQueueTimeout, half the shipped httpTimeout).
	BindQueueTimeout time.Duration
	// FilterWaitTimeout bounds how long a filter call waits while more
	// binds wait for a slot than there are slots (default
	// DefaultFilterWaitTimeout). The scheduler's scheduling cycle waits on
	// the filter, so it then places pods no faster than they are bound:
	// the binds it starts wait for well under BindQueueTimeout, rather than
	// failing and coming back (each failure also costs the scheduler a pod
	// status update and an event).
	FilterWaitTimeout time.Duration
}

// Defaults of the bind limits.
const (
	DefaultMaxConcurrentBinds = 64
	DefaultBindQueueTimeout   = 5 * time.Second
	DefaultFilterWaitTimeout  = 5 * time.Second
)

// Extender implements the verbs.
type Extender struct {
	o Options
	// inFlight holds the pods ("namespace/name") being bound.
	inFlight sync.Map
	// filtered holds the pods the filter found a node for
	// ("namespace/name" -> filteredPod), for their bind when the informer
	// has not delivered them yet: the filter call carries the whole pod.
	filtered      sync.Map
	filteredCount atomic.Int64
	// bindSlots holds a token per bind working (MaxConcurrentBinds);
	// bindWaiting counts the binds waiting for one.
	bindSlots   chan struct{}
	bindWaiting atomic.Int64
	// pre is the preemption bookkeeping (preempt.go).
	pre *preemption
}

// filteredPod is a pod from a filter call, kept until its bind or until.
type filteredPod struct {
	pod   *corev1.Pod
	until int64 // unix nanos
}

// filteredTTL is how long a filter's pod is kept for its bind.
const filteredTTL = time.Minute

// bindsBacklogged reports whether more binds wait for a slot than there
// are slots.
func (e *Extender) bindsBacklogged() bool {
	return e.bindWaiting.Load() > int64(cap(e.bindSlots))
}

// waitForBinds holds a filter call until the binds are no longer
// backlogged, or FilterWaitTimeout.
func (e *Extender) waitForBinds() {
	e.o.Metrics.filterWaits.Inc()
	deadline := time.Now().Add(e.o.FilterWaitTimeout)
	for e.bindsBacklogged() && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
}

// remember keeps pod, which the filter found a node for, for its bind;
// every 1,024th call also forgets the pods whose time is up (filtered but
// never bound).
func (e *Extender) remember(pod *corev1.Pod) {
	now := time.Now().UnixNano()
	e.filtered.Store(pod.Namespace+"/"+pod.Name, filteredPod{pod: pod, until: now + int64(filteredTTL)})
	if e.filteredCount.Add(1)%1024 == 0 {
		e.filtered.Range(func(k, v any) bool {
			if v.(filteredPod).until < now {
				e.filtered.CompareAndDelete(k, v)
			}
			return true
		})
	}
}

// New builds an Extender; a missing Client or State is a programmer error.
func New(o Options) *Extender {
	if o.Client == nil || o.State == nil {
		panic("extender: Client and State are required")
	}
	if o.Policy == nil {
		p, err := score.NewPlacer(score.DefaultPolicy())
		if err != nil {
			panic(err)
		}
		o.Policy = PlacerFunc(func() *score.Placer { return p })
	}
	if o.PodCache == nil {
		o.PodCache = o.State.Pod
	}
	if o.PodsOnNode == nil {
		o.PodsOnNode = o.State.PodsOnNode
	}
	if o.PDBs == nil {
		o.PDBs = func(string) []*policyv1.PodDisruptionBudget { return nil }
	}
	if o.MaxConcurrentBinds <= 0 {
		o.MaxConcurrentBinds = DefaultMaxConcurrentBinds
	}
	if o.BindQueueTimeout <= 0 {
		o.BindQueueTimeout = DefaultBindQueueTimeout
	}
	if o.FilterWaitTimeout <= 0 {
		o.FilterWaitTimeout = DefaultFilterWaitTimeout
	}
	if o.Ready == nil {
		o.Ready = func() bool { return true }
	}
	if o.Leader == nil {
		o.Leader = func() bool { return true }
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 64 << 20
	}
	return &Extender{o: o, bindSlots: make(chan struct{}, o.MaxConcurrentBinds), pre: newPreemption()}
}

// Handler serves the four verbs.
func (e *Extender) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathFilter, e.serve("filter", withArgs(func(args *extenderv1.ExtenderArgs) any { return e.Filter(args) })))
	mux.HandleFunc("POST "+PathPrioritize, e.serve("prioritize", withArgs(func(args *extenderv1.ExtenderArgs) any { return e.Prioritize(args) })))
	mux.HandleFunc("POST "+PathPreempt, e.serve("preempt", func(_ context.Context, body []byte) (any, error) {
		var args extenderv1.ExtenderPreemptionArgs
		if err := decode(body, &args); err != nil {
			return nil, err
		}
		return e.Preempt(&args), nil
	}))
	mux.HandleFunc("POST "+PathBind, e.serve("bind", func(ctx context.Context, body []byte) (any, error) {
		var args extenderv1.ExtenderBindingArgs
		if err := decode(body, &args); err != nil {
			return nil, err
		}
		if args.PodName == "" || args.PodNamespace == "" || args.Node == "" {
			return nil, badRequest{errors.New("bind needs PodName, PodNamespace and Node")}
		}
		return e.Bind(ctx, &args), nil
	}))
	return mux
}

// withArgs decodes the ExtenderArgs of a filter or prioritize call for fn.
func withArgs(fn func(*extenderv1.ExtenderArgs) any) func(context.Context, []byte) (any, error) {
	return func(_ context.Context, body []byte) (any, error) {
		var args extenderv1.ExtenderArgs
		if err := decode(body, &args); err != nil {
			return nil, err
		}
		return fn(&args), nil
	}
}

// badRequest is a body the extender cannot read: HTTP 400.
type badRequest struct{ error }

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest{fmt.Errorf("malformed request body: %w", err)}
	}
	return nil
}

func (e *Extender) serve(verb string, fn func(context.Context, []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		defer func() { e.o.Metrics.latency.WithLabelValues(verb).Observe(time.Since(start).Seconds()) }()
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.o.MaxBodyBytes))
		if err != nil {
			http.Error(w, "reading request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		var out any
		if !e.o.Ready() {
			out = notReady(verb)
		} else if out, err = fn(r.Context(), body); err != nil {
			var br badRequest
			if errors.As(err, &br) {
				e.o.Metrics.badRequests.WithLabelValues(verb).Inc()
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(out); err != nil {
			e.o.Logger.V(1).Info("writing response", "verb", verb, "err", err)
		}
	}
}

// notReadyMessage is the answer of a replica that is not ready (caches not
// synced, or not the leader); the scheduler retries the pod later.
const notReadyMessage = "mlplane extender is not ready (starting up, or not the leader)"

func notReady(verb string) any {
	switch verb {
	case "bind":
		return &extenderv1.ExtenderBindingResult{Error: notReadyMessage}
	case "prioritize":
		return &extenderv1.HostPriorityList{}
	case "preempt":
		// No node: the scheduler finds no candidate and retries the pod.
		return &extenderv1.ExtenderPreemptionResult{NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{}}
	default:
		return &extenderv1.ExtenderFilterResult{Error: notReadyMessage}
	}
}

// candidates are the node names of a filter or prioritize call, whichever
// way the scheduler sent them.
func candidates(args *extenderv1.ExtenderArgs) []string {
	if args.NodeNames != nil {
		return *args.NodeNames
	}
	if args.Nodes != nil {
		names := make([]string, len(args.Nodes.Items))
		for i := range args.Nodes.Items {
			names[i] = args.Nodes.Items[i].Name
		}
		return names
	}
	return nil
}

// podFacts computes the per-pod facts once per call; ok is false for a pod
// that needs no GPU.
func podFacts(placer *score.Placer, c *score.Cluster, pod *corev1.Pod) (f *score.Facts, ok bool, err error) {
	p, ok, err := score.PodOf(pod)
	if !ok || err != nil {
		return nil, ok, err
	}
	f, err = placer.Facts(c, p)
	return f, true, err
}

// Filter keeps the nodes with enough free GPU memory for the pod, and of
// those only the policy's candidateNodes best (by the same score Prioritize
// ranks with; 0 keeps them all); a pod that needs no GPU passes untouched.
// The reason each other node failed is reported when no node passed.
// With one candidate left kube-scheduler skips its score plugins and the
// prioritize call and binds the pod there.
func (e *Extender) Filter(args *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
	if e.bindsBacklogged() {
		e.waitForBinds()
	}
	names := candidates(args)
	if args.Pod == nil {
		return &extenderv1.ExtenderFilterResult{Error: "filter request has no Pod"}
	}
	res := &extenderv1.ExtenderFilterResult{}
	var passed []string
	if args.Pod.UID != "" {
		e.refreshVictims(args.Pod.UID)
	}
	placer := e.o.Policy.Placer()
	keep := int(*placer.Policy().CandidateNodes) // 0: every node that fits
	e.o.State.View(func(c *score.Cluster, now int64) {
		f, ok, err := podFacts(placer, c, args.Pod)
		if err != nil {
			res.FailedAndUnresolvableNodes = make(extenderv1.FailedNodesMap, len(names))
			for _, n := range names {
				res.FailedAndUnresolvableNodes[n] = err.Error()
			}
			e.o.Metrics.filterFailures.WithLabelValues(score.ReasonInvalidPodReq).Add(float64(len(names)))
			return
		}
		if !ok {
			passed = names
			return
		}
		passed = make([]string, 0, len(names))
		best := topNodes{limit: keep}
		counts := map[string]int{}
		var resolvable []string
		for _, name := range names {
			n := c.Node(name)
			fit, why := f.Fit(name, n, now)
			if fit {
				if best.limit > 0 {
					best.offer(name, f.Score(n))
				} else {
					passed = append(passed, name)
				}
				continue
			}
			counts[why.Code]++
			if why.Resolvable {
				resolvable = append(resolvable, name)
				if res.FailedNodes == nil {
					res.FailedNodes = extenderv1.FailedNodesMap{}
				}
				res.FailedNodes[name] = why.Message
			} else {
				if res.FailedAndUnresolvableNodes == nil {
					res.FailedAndUnresolvableNodes = extenderv1.FailedNodesMap{}
				}
				res.FailedAndUnresolvableNodes[name] = why.Message
			}
		}
		for code, n := range counts {
			e.o.Metrics.filterFailures.WithLabelValues(code).Add(float64(n))
		}
		if best.limit > 0 {
			passed = best.names(passed)
		}
		if len(passed) == 0 && len(resolvable) > 0 {
			e.pre.noteFailed(args.Pod, resolvable)
		}
		if len(passed) > 0 {
			// The scheduler reads the reasons only for a pod no node can
			// take (its event, and preemption); otherwise they are bytes
			// to encode and decode for every failed node of every pod.
			res.FailedNodes, res.FailedAndUnresolvableNodes = nil, nil
		}
	})
	if len(passed) == 1 && keep == 1 {
		e.hold(placer, args.Pod, passed[0])
	}
	if len(passed) > 0 && args.Pod.UID != "" {
		e.remember(args.Pod)
	}
	if args.NodeNames == nil && args.Nodes != nil {
		keep := map[string]bool{}
		for _, n := range passed {
			keep[n] = true
		}
		out := &corev1.NodeList{}
		for _, n := range args.Nodes.Items {
			if keep[n.Name] {
				out.Items = append(out.Items, n)
			}
		}
		res.Nodes = out
		return res
	}
	res.NodeNames = &passed
	return res
}

// FilterHoldTTL bounds how long the filter's hold outlives a pod the
// scheduler never binds.
const FilterHoldTTL = 30 * time.Second

// hold books the GPUs the pod would get on node, the one node the filter
// hands back, until the bind replaces the hold with its own reservation:
// kube-scheduler binds asynchronously and filters the next pod before this
// one's bind arrives, and without the hold both would be offered the same
// free memory (the second bind would then fail no_fit and its pod go back
// to the queue with a back-off). This is the scheduler's own "assume" step,
// for GPUs. The bind counts the pod's hold as its own free memory. A pod the
// scheduler gives up on keeps the hold for at most FilterHoldTTL; one
// filtered again gets a new hold in place of the old. A pod that already
// has GPUs (a bind's reservation, or annotated) gets no hold: see
// state.Txn.Hold.
func (e *Extender) hold(placer *score.Placer, pod *corev1.Pod, node string) {
	if pod.UID == "" {
		return
	}
	_ = e.o.State.Update(func(t state.Txn, now int64) error {
		c := t.Cluster()
		f, ok, err := podFacts(placer, c, pod)
		if !ok || err != nil {
			return nil
		}
		n := c.Node(node)
		if fit, _ := f.Fit(node, n, now); !fit {
			return nil // taken since the read lock was dropped; bind decides
		}
		if t.Hold(pod.UID, score.Assignment{Node: node, GPUs: f.Pick(n), MemoryMiB: f.Request().MemoryMiB}, FilterHoldTTL) {
			e.o.Metrics.filterHolds.Inc()
		}
		return nil
	})
}

// Prioritize scores each candidate 0..10 under the placement policy; the
// best placement, and only it, gets 10. Nodes the pod does not fit get 0.
func (e *Extender) Prioritize(args *extenderv1.ExtenderArgs) *extenderv1.HostPriorityList {
	names := candidates(args)
	out := make(extenderv1.HostPriorityList, len(names))
	for i, n := range names {
		out[i].Host = n
	}
	if args.Pod == nil {
		return &out
	}
	placer := e.o.Policy.Placer()
	e.o.State.View(func(c *score.Cluster, now int64) {
		f, ok, err := podFacts(placer, c, args.Pod)
		if !ok || err != nil {
			return
		}
		raw := make([]float64, 0, len(names))
		idx := make([]int, 0, len(names))
		for i, name := range names {
			n := c.Node(name)
			if fit, _ := f.Fit(name, n, now); fit {
				raw = append(raw, f.Score(n))
				idx = append(idx, i)
			}
		}
		for j, s := range score.Normalize(raw) {
			out[idx[j]].Score = s
		}
	})
	return &out
}

// topNodes keeps the limit best-scoring nodes offered to it; among equal
// scores the one offered first wins, as in the simulator.
type topNodes struct {
	limit int
	top   []scored
}

type scored struct {
	name  string
	score float64
}

func (t *topNodes) offer(name string, s float64) {
	// Insert after every node that scores at least as well; drop the last
	// when over the limit. The limit is small (default 1), so a sorted
	// slice beats a heap.
	i := len(t.top)
	for i > 0 && t.top[i-1].score < s {
		i--
	}
	if i >= t.limit {
		return
	}
	if len(t.top) < t.limit {
		t.top = append(t.top, scored{})
	}
	copy(t.top[i+1:], t.top[i:])
	t.top[i] = scored{name, s}
}

// names appends the kept nodes, best first, to dst.
func (t *topNodes) names(dst []string) []string {
	for _, s := range t.top {
		dst = append(dst, s.name)
	}
	return dst
}
