package cluster

import (
	"context"
	"fmt"
)

// KillComponent ends a component at once with SIGKILL to its process group,
// as a crash or an OOM kill would: no graceful shutdown, no released Lease.
// StartComponent brings it back.
func (c *Cluster) KillComponent(name string) error {
	comp, err := c.component(name)
	if err != nil {
		return err
	}
	if comp.Kill() {
		c.opts.Logf("cluster: %s killed", name)
	}
	return nil
}

// ExtenderURL is the urlPrefix of the extender StartExtender runs.
func (c *Cluster) ExtenderURL() string { return "https://" + c.addr(Extender) }

// ExtenderReplica is one more extender process, for high-availability tests.
type ExtenderReplica struct {
	// Name is the component name (StopComponent, KillComponent, logs).
	Name string
	// URL is the urlPrefix of its verbs (HTTPS, see ExtenderClientTLS).
	URL string
	// LeaderURL is its /leaderz: 200 only while it leads.
	LeaderURL string
}

// StartExtenderReplica starts an extender named name with --leader-elect,
// identity name, beside any other; it counts as started once /healthz
// answers (a follower is never /leaderz). The mlplane-scheduler is not
// touched: point it at a replica, or at a router in front of them, with
// StopComponent(MlplaneScheduler) and StartMlplaneScheduler.
func (c *Cluster) StartExtenderReplica(ctx context.Context, name string, args ...string) (*ExtenderReplica, error) {
	if !c.HasBin("extender") {
		return nil, fmt.Errorf("%s not found: run make build", c.Bin("extender"))
	}
	comp, port, metrics, err := c.extenderComponent(ctx, name, true, args)
	if err != nil {
		return nil, err
	}
	comp.Env = []string{"POD_NAME=" + name}
	if err := c.run(ctx, comp); err != nil {
		return nil, err
	}
	return &ExtenderReplica{
		Name:      name,
		URL:       fmt.Sprintf("https://127.0.0.1:%d", port),
		LeaderURL: fmt.Sprintf("http://127.0.0.1:%d/leaderz", metrics),
	}, nil
}
