package extender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
)

// patchAttempts bounds the retries of the annotation patch on a conflict
// (another writer changed the pod between our read and our write).
const patchAttempts = 3

// Bind picks GPUs for the pod on the chosen node, reserves them, writes
// AnnotationGPUIDs with a resourceVersion precondition and creates the
// Binding. On a failure whose outcome is known the reservation and the
// annotation are rolled back; when the outcome is unknown (a write that
// timed out may still have been applied) the reservation stays until the
// informer shows what happened, so the GPUs are never handed out twice. A
// retried bind of a pod already bound to that node succeeds.
//
// The API calls run on a context of their own, detached from the
// scheduler's request: a scheduler that gives up on a slow bind must not cut
// it off half way.
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

	pods := e.o.Client.CoreV1().Pods(args.PodNamespace)
	pod, err := pods.Get(ctx, args.PodName, metav1.GetOptions{})
	if err != nil {
		return BindError, fmt.Errorf("reading pod: %w", err)
	}
	if done, result, err := checkPod(pod, args); done {
		return result, err
	}
	req, ok, err := score.PodRequest(pod)
	if err != nil {
		return BindError, err
	}
	if !ok {
		if err := e.createBinding(ctx, pod, args.Node); err != nil {
			return BindError, err
		}
		return BindNoGPU, nil
	}

	// Pick and reserve under the write lock: no other bind in this process
	// sees the memory as free from here on.
	var ids []string
	err = e.o.State.Update(func(t state.Txn, now int64) error {
		c := t.Cluster()
		f, err := e.o.Policy.Placer().Facts(c, score.Pod{Key: string(pod.UID), Request: req, Override: pod.Annotations[api.AnnotationPlacement]})
		if err != nil {
			return err
		}
		n := c.Node(args.Node)
		if fit, why := f.Fit(args.Node, n, now); !fit {
			return fmt.Errorf("pod no longer fits node %s: %s", args.Node, why.Message)
		}
		ids = f.Pick(n)
		t.Reserve(pod.UID, score.Assignment{Node: args.Node, GPUs: ids, MemoryMiB: req.MemoryMiB})
		return nil
	})
	if err != nil {
		return BindNoFit, err
	}
	value := api.FormatGPUIDs(ids)

	patched, err := e.annotate(ctx, pod, args, value)
	if err != nil {
		if known(err) {
			e.o.State.Release(pod.UID)
		}
		if apierrors.IsConflict(err) {
			return BindConflict, err
		}
		return BindError, err
	}
	if err := e.createBinding(ctx, patched, args.Node); err != nil {
		// A lost response to an earlier, successful Binding looks like
		// a failure here: check before undoing anything.
		if cur, gerr := pods.Get(ctx, args.PodName, metav1.GetOptions{}); gerr == nil && cur.UID == pod.UID && cur.Spec.NodeName == args.Node {
			return BindRetried, nil
		}
		if known(err) {
			e.rollback(ctx, pod, value)
		}
		return BindError, err
	}
	return BindBound, nil
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

// annotate writes AnnotationGPUIDs with the pod's resourceVersion as a
// precondition; on a conflict it re-reads the pod and tries again while the
// pod is still unbound and the same pod.
func (e *Extender) annotate(ctx context.Context, pod *corev1.Pod, args *extenderv1.ExtenderBindingArgs, value string) (*corev1.Pod, error) {
	pods := e.o.Client.CoreV1().Pods(pod.Namespace)
	cur := pod
	var lastErr error
	for range patchAttempts {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"resourceVersion": cur.ResourceVersion,
			"annotations":     map[string]string{api.AnnotationGPUIDs: value},
		}})
		out, err := pods.Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: api.FieldManager})
		if err == nil {
			return out, nil
		}
		if !apierrors.IsConflict(err) {
			return nil, fmt.Errorf("writing %s: %w", api.AnnotationGPUIDs, err)
		}
		lastErr = err
		if cur, err = pods.Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("re-reading pod after a conflict: %w", err)
		}
		if cur.UID != pod.UID || cur.Spec.NodeName != "" {
			return nil, apierrors.NewConflict(corev1.Resource("pods"), pod.Name, errors.New("pod changed while being bound"))
		}
	}
	return nil, fmt.Errorf("writing %s: %w", api.AnnotationGPUIDs, lastErr)
}

func (e *Extender) createBinding(ctx context.Context, pod *corev1.Pod, node string) error {
	err := e.o.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{FieldManager: api.FieldManager})
	if err != nil {
		return fmt.Errorf("creating binding: %w", err)
	}
	return nil
}

// rollback removes the annotation this bind wrote (only if it still holds
// that value) and drops the reservation.
func (e *Extender) rollback(ctx context.Context, pod *corev1.Pod, value string) {
	path := "/metadata/annotations/" + strings.ReplaceAll(strings.ReplaceAll(api.AnnotationGPUIDs, "~", "~0"), "/", "~1")
	patch, _ := json.Marshal([]map[string]any{
		{"op": "test", "path": path, "value": value},
		{"op": "remove", "path": path},
	})
	_, err := e.o.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: api.FieldManager})
	if err != nil && !apierrors.IsNotFound(err) {
		// The annotation may stay and keeps the GPUs booked (by the
		// reservation until it expires, then by the informer's view of
		// the pod) until the scheduler's retry re-picks them: safe,
		// only wasteful.
		e.o.Logger.Info("rolling back the GPU annotation failed", "pod", pod.Namespace+"/"+pod.Name, "err", err.Error())
		return
	}
	e.o.State.Release(pod.UID)
}
