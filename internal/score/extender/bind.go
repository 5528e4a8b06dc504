package extender

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
	"github.com/mlplane/mlplane/internal/score/state"
)

// Bind results, the label of the binds counter.
const (
	BindBound     = "bound"
	BindRetried   = "already_bound"
	BindNoGPU     = "bound_no_gpu"
	BindNoFit     = "no_fit"
	BindConflict  = "conflict"
	BindError     = "error"
	BindNotLeader = "not_leader"
	// BindBusy: MaxConcurrentBinds binds were working for all of
	// BindQueueTimeout; the scheduler retries the pod after its back-off.
	BindBusy = "busy"
)

// Bind picks GPUs for the pod on the chosen node, reserves them and creates
// one Binding that carries AnnotationGPUIDs: the API server writes the
// annotation and spec.nodeName in one atomic update, preconditioned on the
// pod's UID, so the pod is never half-written and there is nothing to roll
// back. When the API server answers that the Binding failed the reservation
// is released; when the outcome is unknown (a write that timed out may still
// have been applied) the reservation stays until the informer shows what
// happened, so the GPUs are never handed out twice. A retried bind of a pod
// already bound to that node succeeds.
//
// The pod comes from the informer's cache; only a pod the cache does not
// hold yet (or holds with another UID) is read from the API server.
//
// The API call runs on a context of its own, detached from the scheduler's
// request: a scheduler that gives up on a slow bind must not cut it off half
// way.
func (e *Extender) Bind(ctx context.Context, args *extenderv1.ExtenderBindingArgs) *extenderv1.ExtenderBindingResult {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bindTimeout)
	defer cancel()
	result, err := e.bind(ctx, args)
	e.o.Metrics.binds.WithLabelValues(result).Inc()
	log := e.o.Logger.WithValues("pod", args.PodNamespace+"/"+args.PodName, "node", args.Node, "result", result)
	if err != nil {
		log.Info("bind failed", "err", err.Error())
		return &extenderv1.ExtenderBindingResult{Error: err.Error()}
	}
	log.V(2).Info("bound")
	return &extenderv1.ExtenderBindingResult{}
}

// bindTimeout bounds one bind's API calls.
const bindTimeout = 30 * time.Second

// BindInProgress is the result of a bind for a pod another bind is still
// working on (the scheduler gave up on the first and retried).
const BindInProgress = "in_progress"

// known reports whether a failed write certainly did not happen: the API
// server answered with a status. A transport error or a timeout leaves it
// open.
func known(err error) bool {
	var st apierrors.APIStatus
	return errors.As(err, &st)
}

func (e *Extender) bind(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (string, error) {
	if !e.o.Leader() {
		return BindNotLeader, errors.New(notReadyMessage)
	}
	// One bind per pod at a time: a second one would take the first one's
	// reservation for its own.
	key := args.PodNamespace + "/" + args.PodName
	if _, busy := e.inFlight.LoadOrStore(key, struct{}{}); busy {
		return BindInProgress, fmt.Errorf("a bind of pod %s is already in progress", key)
	}
	defer e.inFlight.Delete(key)
	defer e.filtered.Delete(key)
	if !e.acquireBindSlot(ctx) {
		// The GPUs the filter held for the pod are free again until its
		// next try; a reservation of an earlier bind stays.
		if args.PodUID != "" {
			e.o.State.ReleaseHold(args.PodUID)
		}
		return BindBusy, fmt.Errorf("extender busy: %d binds working for over %v; retry later", cap(e.bindSlots), e.o.BindQueueTimeout)
	}
	defer func() { <-e.bindSlots }()

	pod, err := e.lookup(ctx, args)
	if err != nil {
		return BindError, err
	}
	if done, result, err := checkPod(pod, args); done {
		return result, err
	}
	uid := pod.UID
	sp, ok, err := score.PodOf(pod)
	if err != nil {
		return BindError, err
	}
	if !ok {
		if err := e.createBinding(ctx, pod, args.Node, ""); err != nil {
			if bound, _ := e.boundAlready(ctx, pod, args.Node, false); bound {
				return BindRetried, nil
			}
			return BindError, err
		}
		return BindNoGPU, nil
	}

	// Pick and reserve under the write lock: no other bind in this process
	// sees the memory as free from here on.
	var ids []string
	err = e.o.State.Update(func(t state.Txn, now int64) error {
		c := t.Cluster()
		f, err := e.o.Policy.Placer().Facts(c, sp)
		if err != nil {
			return err
		}
		n := c.Node(args.Node)
		if fit, why := f.Fit(args.Node, n, now); !fit {
			return fmt.Errorf("pod no longer fits node %s: %s", args.Node, why.Message)
		}
		ids = f.Pick(n)
		t.Reserve(uid, score.Assignment{Node: args.Node, GPUs: ids, MemoryMiB: sp.Request.MemoryMiB})
		return nil
	})
	if err != nil {
		return BindNoFit, err
	}

	if err := e.createBinding(ctx, pod, args.Node, api.FormatGPUIDs(ids)); err != nil {
		// A lost response to an earlier, successful Binding (or a cache
		// that had not seen the bind yet) looks like a conflict here:
		// check before releasing anything.
		bound, checked := e.boundAlready(ctx, pod, args.Node, true)
		if bound {
			return BindRetried, nil
		}
		// Released only when the API server refused the Binding and the
		// pod was read back: otherwise the reservation stays until the
		// informer shows the pod, or expires.
		if known(err) && checked {
			e.o.State.Release(uid)
		}
		if apierrors.IsConflict(err) {
			return BindConflict, err
		}
		return BindError, err
	}
	return BindBound, nil
}

// acquireBindSlot takes one of the MaxConcurrentBinds slots, waiting at
// most BindQueueTimeout.
func (e *Extender) acquireBindSlot(ctx context.Context) bool {
	select {
	case e.bindSlots <- struct{}{}:
		return true
	default:
	}
	e.bindWaiting.Add(1)
	defer e.bindWaiting.Add(-1)
	t := time.NewTimer(e.o.BindQueueTimeout)
	defer t.Stop()
	select {
	case e.bindSlots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// lookup finds the pod to bind: from the informer's cache, else as the
// filter call carried it, else with one GET, under the UID the scheduler
// named. (The filter's copy is as fresh as a cache that had seen the pod
// then: a pod bound since is refused by the Binding and read back, one
// replaced has another UID; and it is not used while an earlier bind of
// the pod may have landed.)
func (e *Extender) lookup(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (*corev1.Pod, error) {
	if pod, ok := e.o.PodCache(args.PodNamespace, args.PodName); ok && (args.PodUID == "" || pod.UID == args.PodUID) {
		e.o.Metrics.bindPodSource.WithLabelValues("cache").Inc()
		return pod, nil
	}
	// Not after an earlier bind of the pod whose outcome is unknown: it may
	// have landed, and only the API server can say (checkPod on what it
	// answers).
	if v, ok := e.filtered.Load(args.PodNamespace + "/" + args.PodName); ok {
		if f := v.(filteredPod); args.PodUID != "" && f.pod.UID == args.PodUID && time.Now().UnixNano() < f.until &&
			!e.o.State.BindReserved(args.PodUID) {
			e.o.Metrics.bindPodSource.WithLabelValues("filter").Inc()
			return f.pod, nil
		}
	}
	e.o.Metrics.bindPodSource.WithLabelValues("get").Inc()
	pod, err := e.o.Client.CoreV1().Pods(args.PodNamespace).Get(ctx, args.PodName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading pod: %w", err)
	}
	return pod, nil
}

// boundAlready reports, after a failed Binding, whether the pod is the same
// pod and already bound to node (with its GPUs annotated when withGPUs): a
// retried bind whose first attempt won, or a cache that had not seen the
// bind. The GPUs the pod carries are then reserved in place of those this
// attempt picked, until the informer confirms them. checked is false when
// the pod could not be read back.
func (e *Extender) boundAlready(ctx context.Context, pod *corev1.Pod, node string, withGPUs bool) (bound, checked bool) {
	cur, err := e.o.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return false, apierrors.IsNotFound(err)
	}
	if cur.UID != pod.UID || cur.Spec.NodeName != node {
		return false, true
	}
	if !withGPUs {
		return true, true
	}
	a, ok, _ := state.Assignment(cur)
	if !ok {
		return false, true
	}
	_ = e.o.State.Update(func(t state.Txn, _ int64) error {
		t.Reserve(cur.UID, a)
		return nil
	})
	return true, true
}

// checkPod handles the pods that need no placement: done is true when the
// bind is decided already.
func checkPod(pod *corev1.Pod, args *extenderv1.ExtenderBindingArgs) (done bool, result string, err error) {
	switch {
	case args.PodUID != "" && pod.UID != args.PodUID:
		return true, BindError, fmt.Errorf("pod %s/%s was replaced (uid %s, scheduler asked for %s)", pod.Namespace, pod.Name, pod.UID, args.PodUID)
	case pod.Spec.NodeName == args.Node:
		return true, BindRetried, nil
	case pod.Spec.NodeName != "":
		return true, BindError, fmt.Errorf("pod %s/%s is already bound to node %s", pod.Namespace, pod.Name, pod.Spec.NodeName)
	}
	return false, "", nil
}

// createBinding binds the pod to node in one call. The Binding names the
// pod's UID, a precondition the API server checks, and carries gpuIDs (when
// set) as AnnotationGPUIDs, which the API server copies onto the pod in the
// same update as spec.nodeName. A pod already bound is refused with a
// Conflict.
func (e *Extender) createBinding(ctx context.Context, pod *corev1.Pod, node, gpuIDs string) error {
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	if gpuIDs != "" {
		b.Annotations = map[string]string{api.AnnotationGPUIDs: gpuIDs}
	}
	if err := e.o.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{FieldManager: api.FieldManager}); err != nil {
		return fmt.Errorf("creating binding: %w", err)
	}
	return nil
}
