package cluster

import (
	"context"
	"fmt"

	"github.com/google/renameio/v2"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StartNodeAgent runs bin/node-agent for node, as component NodeAgent(node),
// with the fake backend reading fakeSpec: inline ("8x80Gi") or a YAML file
// that the agent re-reads at every poll, so a test can turn a GPU unhealthy
// by rewriting it. The node should have been added with PublishNone. It
// returns once the agent's /healthz answers.
func (c *Cluster) StartNodeAgent(ctx context.Context, node, fakeSpec string, extraArgs ...string) error {
	comp, err := c.nodeAgent(node, fakeSpec, extraArgs...)
	if err != nil {
		return err
	}
	return c.run(ctx, comp)
}

// NodeAgentMetricsURL is the /metrics URL of the node agent of node, for a
// test that reads its metrics; empty when the cluster runs none.
func (c *Cluster) NodeAgentMetricsURL(node string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.ports[NodeAgent(node)+"-metrics"]
	if !ok {
		return ""
	}
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", p)
}

// RemoveNode deletes a GPU node that a test added and forgets it, so that
// later tests neither schedule onto it nor list it. Its node agent, if any,
// should be stopped first.
func (c *Cluster) RemoveNode(ctx context.Context, name string) error {
	if err := c.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	c.mu.Lock()
	delete(c.nodes, name)
	c.mu.Unlock()
	return nil
}

// WriteFakeSpec writes a fake GPU spec file (YAML) for an agent started by
// StartNodeAgent, which re-reads it at every poll: written aside and
// renamed, so that the agent never reads half a file.
func WriteFakeSpec(path string, yaml []byte) error { return renameio.WriteFile(path, yaml, 0o644) }
