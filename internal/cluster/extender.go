package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// ExtenderOptions configures StartExtender and StartMlplaneScheduler.
type ExtenderOptions struct {
	// PolicyFile is a PlacementPolicy passed as --policy. Default: the
	// extender's built-in policy.
	PolicyFile string
	// SchedulerConfig is a KubeSchedulerConfiguration file (such as the one
	// in config/scheduler/) for the mlplane-scheduler process; its
	// extenders' urlPrefix is pointed at the local extender and its client
	// connection at the local cluster. Default: config/scheduler/config.yaml
	// of the module (what users install) when it exists, else a generated
	// one with one profile api.DefaultSchedulerName and the extender on
	// filter, prioritize and bind.
	SchedulerConfig string
	// Args are extra extender flags.
	Args []string
}

// ShippedSchedulerConfig (relative to the module root) is the
// KubeSchedulerConfiguration StartExtender uses by default.
const ShippedSchedulerConfig = "config/scheduler/config.yaml"

// StartExtender starts bin/extender, waits until it is ready, then starts
// the mlplane-scheduler (a second kube-scheduler whose profile
// api.DefaultSchedulerName calls the extender). As installed, the extender
// serves its verbs over TLS to the scheduler's client certificate only
// (ExtenderSchedulerTLS), runs as its ServiceAccount with its RBAC, and
// under the admission policies of ExtenderConfig.
func (c *Cluster) StartExtender(ctx context.Context, opts ExtenderOptions) error {
	if !c.HasBin("extender") {
		return fmt.Errorf("%s not found: run make build", c.Bin("extender"))
	}
	var args []string
	if opts.PolicyFile != "" {
		args = append(args, "--policy="+opts.PolicyFile)
	}
	comp, port, _, err := c.extenderComponent(ctx, Extender, false, append(args, opts.Args...))
	if err != nil {
		return err
	}
	if err := c.run(ctx, comp); err != nil {
		return err
	}
	// A mlplane-scheduler started without the extender (StartMlplaneScheduler
	// with no URL) is replaced by one that calls it.
	if c.Running(MlplaneScheduler) {
		if err := c.StopComponent(MlplaneScheduler); err != nil {
			return err
		}
	}
	if opts.SchedulerConfig == "" {
		if root, err := ModuleRoot(); err == nil {
			if _, err := os.Stat(filepath.Join(root, ShippedSchedulerConfig)); err == nil {
				opts.SchedulerConfig = filepath.Join(root, ShippedSchedulerConfig)
			}
		}
	}
	return c.StartMlplaneScheduler(ctx, fmt.Sprintf("https://127.0.0.1:%d", port), opts.SchedulerConfig)
}

// StartMlplaneScheduler starts the second kube-scheduler, serving the
// profile api.DefaultSchedulerName. With extenderURL empty it runs that
// profile without an extender, so that the pods the webhook sends to
// mlplane-scheduler are still scheduled before the extender exists (the
// demo does this). An https:// extenderURL is called with the client
// certificate of ExtenderSchedulerTLS (StartExtender makes it). configFile
// is as ExtenderOptions.SchedulerConfig.
func (c *Cluster) StartMlplaneScheduler(ctx context.Context, extenderURL, configFile string) error {
	var base []byte
	if configFile != "" {
		b, err := os.ReadFile(configFile)
		if err != nil {
			return err
		}
		base = b
	}
	kc := c.path("config", "kube-scheduler.kubeconfig")
	var tls *SchedulerTLS
	if strings.HasPrefix(extenderURL, "https://") {
		if tls = c.ExtenderSchedulerTLS(); tls == nil {
			return fmt.Errorf("extender %s: no client certificate for it (StartExtender issues one)", extenderURL)
		}
	}
	b, err := schedulerConfig(base, kc, api.DefaultSchedulerName, extenderURL, tls)
	if err != nil {
		return err
	}
	cfgPath := c.path("config", "mlplane-scheduler.yaml")
	if err := renameio.WriteFile(cfgPath, b, 0o644); err != nil {
		return err
	}
	if _, err := c.port(MlplaneScheduler); err != nil {
		return err
	}
	return c.run(ctx, c.schedulerComponent(MlplaneScheduler, cfgPath, c.addr(MlplaneScheduler)))
}

// ExtenderConfig is what StartExtender applies from the module's config/
// before it starts the extender: its ServiceAccount and RBAC, and the
// admission policies that keep the values it trusts in the right hands.
var ExtenderConfig = []string{"rbac/extender.yaml", "admission/gpu-assignment.yaml", "admission/node-agent.yaml"}

// extenderKubeconfig applies ExtenderConfig and returns a kubeconfig of
// the extender's ServiceAccount, once per cluster: the extender runs with
// the identity and the RBAC it has when installed, under the shipped
// admission policies (which refuse GPU annotations from anyone else).
func (c *Cluster) extenderKubeconfig(ctx context.Context) (string, error) {
	c.mu.Lock()
	path := c.extenderConfig
	c.mu.Unlock()
	if path != "" {
		return path, nil
	}
	if err := c.ApplyConfig(ctx, ExtenderConfig...); err != nil {
		return "", err
	}
	// Long enough for any test or benchmark run; a restarted extender
	// reads the same file.
	path, err := c.ServiceAccountKubeconfig(ctx, api.DefaultNamespace, ExtenderServiceAccount, "", "extender.kubeconfig", 48*time.Hour)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.extenderConfig = path
	c.mu.Unlock()
	return path, nil
}

// ExtenderServiceAccount is the extender's ServiceAccount
// (config/rbac/extender.yaml), in api.DefaultNamespace.
const ExtenderServiceAccount = "mlplane-extender"

// extenderComponent is bin/extender serving as component name on ports of
// its own, as the extender's ServiceAccount, with extra flags after the
// common ones; ready once /healthz answers. It returns the ports of the
// verbs and of /metrics and /leaderz.
func (c *Cluster) extenderComponent(ctx context.Context, name string, leaderElect bool, extra []string) (comp *component, port, metrics int, err error) {
	kubeconfig, err := c.extenderKubeconfig(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	pki, err := c.extenderTLS()
	if err != nil {
		return nil, 0, 0, err
	}
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
	comp = c.newComponent(name, "extender", append([]string{"serve",
		fmt.Sprintf("--addr=127.0.0.1:%d", port),
		fmt.Sprintf("--health-addr=127.0.0.1:%d", health),
		fmt.Sprintf("--metrics-addr=127.0.0.1:%d", metrics),
		"--kubeconfig=" + kubeconfig,
		"--cert-dir=" + pki.serverDir,
		"--namespace=" + api.DefaultNamespace,
		fmt.Sprintf("--leader-elect=%t", leaderElect),
	}, extra...)...)
	comp.ready = runner.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/healthz", health), false)
	return comp, port, metrics, nil
}
