package extender

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
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

// LeaderOptions configure RunLeaderElection.
type LeaderOptions struct {
	Client    kubernetes.Interface
	Namespace string
	// Identity is this replica's name in the Lease (e.g. the pod name).
	Identity string
	// OnStarted runs when this replica becomes the leader, before it is
	// marked leader; the extender seeds its state there.
	OnStarted func(ctx context.Context) error
	// OnStopped runs when leadership is lost; the process should exit so
	// that it restarts from a clean state.
	OnStopped func()
	Logger    logr.Logger
}

// RunLeaderElection campaigns for the Lease until ctx ends, calling setLeader
// as leadership comes and goes. It returns when ctx ends or leadership is
// lost.
func RunLeaderElection(ctx context.Context, o LeaderOptions, setLeader func(bool)) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, o.Namespace, LeaseName,
		o.Client.CoreV1(), o.Client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: o.Identity})
	if err != nil {
		return fmt.Errorf("leader election lock: %w", err)
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   LeaderLeaseDuration,
		RenewDeadline:   LeaderRenewDeadline,
		RetryPeriod:     LeaderRetryPeriod,
		ReleaseOnCancel: true,
		Name:            LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				if o.OnStarted != nil {
					if err := o.OnStarted(ctx); err != nil {
						o.Logger.Error(err, "preparing to lead failed; giving up leadership")
						if o.OnStopped != nil {
							o.OnStopped()
						}
						return
					}
				}
				o.Logger.Info("became the leader", "identity", o.Identity)
				setLeader(true)
			},
			OnStoppedLeading: func() {
				setLeader(false)
				o.Logger.Info("stopped leading", "identity", o.Identity)
				if o.OnStopped != nil {
					o.OnStopped()
				}
			},
			OnNewLeader: func(id string) {
				if id != o.Identity {
					o.Logger.Info("leader is elsewhere", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx)
	return nil
}
