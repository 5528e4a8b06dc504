package cluster

import (
	"context"
	"fmt"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// WebhookInstance is an extra bin/webhook process started by
// StartWebhookInstance, beside the suite's own webhook.
type WebhookInstance struct {
	// Name is its component name (StopComponent, LogPath).
	Name string
	// Addr is the host:port it serves admission reviews on, over TLS.
	Addr string
	// MetricsURL is its Prometheus /metrics.
	MetricsURL string
}

// URL is the admission URL to register for the instance.
func (w WebhookInstance) URL() string { return "https://" + w.Addr + api.WebhookPath }

// StartWebhookInstance starts another bin/webhook as component name, on
// free loopback ports, with the cluster's kubeconfig and the given extra
// flags (--cert-dir, --cert-mode, ...), and waits until its /readyz
// answers. The config/ tests use it to run the webhook the way an install
// would: with a certificate cert-manager's code issued, or self-signed.
func (c *Cluster) StartWebhookInstance(ctx context.Context, name string, args ...string) (WebhookInstance, error) {
	if !c.HasBin("webhook") {
		return WebhookInstance{}, fmt.Errorf("%s not found: run make build", c.Bin("webhook"))
	}
	comp, port, metrics, err := c.webhookComponent(name, args)
	if err != nil {
		return WebhookInstance{}, err
	}
	w := WebhookInstance{
		Name:       name,
		Addr:       fmt.Sprintf("127.0.0.1:%d", port),
		MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics),
	}
	return w, c.run(ctx, comp)
}

// webhookComponent is bin/webhook serving as component name on loopback
// ports of its own, with extra flags after the common ones; ready once its
// /readyz answers. It returns the ports of the admission server and of
// /metrics.
func (c *Cluster) webhookComponent(name string, extra []string) (comp *component, port, metrics int, err error) {
	if port, err = c.port(name); err != nil {
		return nil, 0, 0, err
	}
	health, err := c.port(name + "-health")
	if err != nil {
		return nil, 0, 0, err
	}
	if metrics, err = c.port(name + "-metrics"); err != nil {
		return nil, 0, 0, err
	}
	comp = c.newComponent(name, "webhook", append([]string{"serve",
		"--host=127.0.0.1",
		fmt.Sprintf("--port=%d", port),
		fmt.Sprintf("--health-addr=127.0.0.1:%d", health),
		fmt.Sprintf("--metrics-addr=127.0.0.1:%d", metrics),
		"--kubeconfig=" + c.Kubeconfig(),
	}, extra...)...)
	comp.ready = runner.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/readyz", health), false)
	return comp, port, metrics, nil
}
