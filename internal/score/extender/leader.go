package extender

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score/state"
)

// LeaseName is the coordination Lease the extender replicas elect a leader
// with, in the extender's namespace.
const LeaseName = "mlplane-extender"

// Leader election timing: a dead leader is replaced within about
// LeaderLeaseDuration + LeaderRetryPeriod; a leader that cannot renew for
// LeaderRenewDeadline stops binding before anyone else may start.
const (
	LeaderLeaseDuration = 6 * time.Second
	LeaderRenewDeadline = 4 * time.Second
	LeaderRetryPeriod   = 1 * time.Second
)

// leaderElection sets the manager's leader election: Lease LeaseName in
// o.Namespace, held as o.Identity through o.Client (the lock is built here
// rather than by the manager so that it uses the extender's client and
// identity), released when the manager stops.
func leaderElection(mo *manager.Options, o ServerOptions) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, o.Namespace, LeaseName,
		o.Client.CoreV1(), o.Client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: o.Identity})
	if err != nil {
		return fmt.Errorf("leader election lock: %w", err)
	}
	lease, renew, retry := LeaderLeaseDuration, LeaderRenewDeadline, LeaderRetryPeriod
	mo.LeaderElection = true
	mo.LeaderElectionID = LeaseName
	mo.LeaderElectionNamespace = o.Namespace
	mo.LeaderElectionResourceLockInterface = lock
	mo.LeaseDuration, mo.RenewDeadline, mo.RetryPeriod = &lease, &renew, &retry
	mo.LeaderElectionReleaseOnCancel = true
	return nil
}

// leading is what the elected replica does, as a manager runnable that
// runs only on the leader: wait for the caches, read what the old leader
// booked last, label its pod, and only then answer the verbs (leader) until
// the manager stops it. led records that it labelled its pod. An error
// (the seeding or the label failed) stops the manager, and the process.
func leading(o ServerOptions, st *state.State, synced <-chan struct{}, leader, led *atomic.Bool, log logr.Logger) manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		select {
		case <-synced:
		case <-ctx.Done():
			return nil
		}
		n, err := st.SeedFromAPI(ctx, o.Client)
		log.Info("state seeded for leadership", "seeded", n)
		if err != nil {
			return fmt.Errorf("preparing to lead: %w", err)
		}
		led.Store(true)
		if err := labelLeader(ctx, o, true); err != nil {
			return fmt.Errorf("preparing to lead: %w", err)
		}
		leader.Store(true)
		log.Info("became the leader", "identity", o.Identity)
		<-ctx.Done()
		leader.Store(false)
		log.Info("stopped leading", "identity", o.Identity)
		return nil
	})
}

// labelLeader sets (on) or removes api.LabelExtenderLeader on the replica's
// own pod, when it runs in one. The removal of an absent label and a pod
// that no longer exists are not errors.
func labelLeader(ctx context.Context, o ServerOptions, on bool) error {
	if o.PodName == "" || o.PodNamespace == "" {
		return nil
	}
	value := "null"
	if on {
		value = `"true"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, api.LabelExtenderLeader, value)
	_, err := o.Client.CoreV1().Pods(o.PodNamespace).Patch(ctx, o.PodName, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: api.FieldManager})
	if err != nil && !(apierrors.IsNotFound(err) && !on) {
		return fmt.Errorf("label pod %s/%s %s=%t: %w", o.PodNamespace, o.PodName, api.LabelExtenderLeader, on, err)
	}
	return nil
}
