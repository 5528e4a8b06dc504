package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// component is a process plus how to tell that it is ready.
type component struct {
	*runner.Process
	ready func(ctx context.Context) error
	// after runs once the component is ready, on every start.
	after func(ctx context.Context) error
}

// Start generates the PKI, starts etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and KWOK, waits until each is
// ready, and creates api.DefaultNamespace. On error, call Stop (it is safe on
// a half-started cluster); the error carries the failing component's log.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.init(); err != nil {
		return err
	}
	for _, t := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		if !c.HasBin(t) {
			return fmt.Errorf("%s not found in %s: run make tools", t, c.opts.BinDir)
		}
	}
	if c.real != nil {
		if c.opts.Detach && len(c.real.opts.RegistryCommand) == 0 {
			return errors.New("a detached real node needs RealNodeOptions.RegistryCommand: its registry must outlive this process")
		}
		if err := c.prepareRealNode(); err != nil {
			return fmt.Errorf("real node: %w", err)
		}
	}
	if err := c.writePKI(); err != nil {
		return err
	}
	for _, name := range []string{"etcd-client", "etcd-peer", APIServer, ControllerManager, Scheduler, KWOK} {
		if _, err := c.port(name); err != nil {
			return err
		}
	}
	c.opts.Logf("cluster: starting control plane in %s", c.dir)
	steps := []func() (*component, error){c.etcd, c.apiserver}
	for _, step := range steps {
		comp, err := step()
		if err != nil {
			return err
		}
		if err := c.run(ctx, comp); err != nil {
			return err
		}
	}
	// The rest start together; each waits for readiness on its own.
	var comps []*component
	for _, step := range []func() (*component, error){c.controllerManager, c.defaultScheduler, c.kwok} {
		comp, err := step()
		if err != nil {
			return err
		}
		comps = append(comps, comp)
	}
	if err := c.runAll(ctx, comps...); err != nil {
		return err
	}
	if err := ensureNamespace(ctx, c.client, api.DefaultNamespace, nil); err != nil {
		return err
	}
	c.opts.Logf("cluster: control plane ready; export KUBECONFIG=%s", c.Kubeconfig())
	if c.real != nil {
		return c.startRealNode(ctx)
	}
	return nil
}

func (c *Cluster) init() error {
	if c.opts.BinDir == "" {
		bin, err := DefaultBinDir()
		if err != nil {
			return err
		}
		c.opts.BinDir = bin
	}
	if c.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "mlplane-cluster-")
		if err != nil {
			return err
		}
		c.dir, c.ownsDir = dir, true
	} else {
		dir, err := filepath.Abs(c.opts.Dir)
		if err != nil {
			return err
		}
		c.dir = dir
	}
	for _, d := range []string{"pki", "logs", "etcd", "config"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) newComponent(name, bin string, args ...string) *component {
	return &component{Process: &runner.Process{
		Name:    name,
		Path:    c.Bin(bin),
		Args:    args,
		LogPath: c.path("logs", name+".log"),
		Detach:  c.opts.Detach,
	}}
}

// run registers comp, starts it and waits until it is ready.
func (c *Cluster) run(ctx context.Context, comp *component) error {
	c.mu.Lock()
	if _, ok := c.components[comp.Name]; !ok {
		c.order = append(c.order, comp.Name)
	}
	c.components[comp.Name] = comp
	c.mu.Unlock()
	return c.startAndWait(ctx, comp)
}

func (c *Cluster) runAll(ctx context.Context, comps ...*component) error {
	errs := make([]error, len(comps))
	var wg sync.WaitGroup
	for i, comp := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.run(ctx, comp)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) startAndWait(ctx context.Context, comp *component) error {
	start := time.Now()
	if err := comp.Start(); err != nil {
		return err
	}
	if err := comp.WaitReady(ctx, c.opts.StartTimeout, comp.ready); err != nil {
		return err
	}
	if comp.after != nil {
		if err := comp.after(ctx); err != nil {
			return fmt.Errorf("%s: %w", comp.Name, err)
		}
	}
	c.opts.Logf("cluster: %s ready in %s (pid %d, log %s)", comp.Name, time.Since(start).Round(time.Millisecond), comp.PID(), comp.LogPath)
	return nil
}

// StopComponent stops one component (SIGTERM to its process group, SIGKILL
// after 10 s). The e2e suite uses it to take the webhook or the extender away.
func (c *Cluster) StopComponent(name string) error {
	comp, err := c.component(name)
	if err != nil {
		return err
	}
	comp.Stop(10 * time.Second)
	c.opts.Logf("cluster: %s stopped", name)
	return nil
}

// StartComponent starts a stopped component again, with the same flags and
// ports, and waits until it is ready.
func (c *Cluster) StartComponent(ctx context.Context, name string) error {
	comp, err := c.component(name)
	if err != nil {
		return err
	}
	return c.startAndWait(ctx, comp)
}

// RestartComponent is StopComponent then StartComponent.
func (c *Cluster) RestartComponent(ctx context.Context, name string) error {
	if err := c.StopComponent(name); err != nil {
		return err
	}
	return c.StartComponent(ctx, name)
}

// Running reports whether a component's process is running.
func (c *Cluster) Running(name string) bool {
	comp, err := c.component(name)
	return err == nil && comp.PID() != 0
}

// PID is the process id of a running component, 0 when it is not running
// (the benchmarks read its CPU time and memory from /proc).
func (c *Cluster) PID(name string) int {
	comp, err := c.component(name)
	if err != nil {
		return 0
	}
	return comp.PID()
}

// Components lists the components in start order.
func (c *Cluster) Components() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

// LogPath is the log file of a component.
func (c *Cluster) LogPath(name string) string { return c.path("logs", name+".log") }

func (c *Cluster) component(name string) (*component, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	comp, ok := c.components[name]
	if !ok {
		names := append([]string(nil), c.order...)
		sort.Strings(names)
		return nil, fmt.Errorf("no component %q; have %s", name, strings.Join(names, ", "))
	}
	return comp, nil
}

// DumpLogs writes the last lines of every component's log to w, for a
// failed test or demo.
func (c *Cluster) DumpLogs(w io.Writer, lines int) {
	for _, name := range c.Components() {
		fmt.Fprintf(w, "\n===== %s (last %d lines of %s) =====\n%s\n", name, lines, c.LogPath(name), runner.TailFile(c.LogPath(name), lines))
	}
}

// Stop stops every component in reverse start order and, when the cluster
// made its own directory, removes it. It is safe to call more than once, and
// on a cluster that failed to start.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	pub := c.publisher
	c.publisher = nil
	order := append([]string(nil), c.order...)
	c.mu.Unlock()
	if pub != nil {
		pub.stop()
	}
	for i := len(order) - 1; i >= 0; i-- {
		comp, err := c.component(order[i])
		if err == nil {
			comp.Stop(10 * time.Second)
		}
	}
	var errs []error
	if c.real != nil {
		// before the directory goes: the node's mounts are in it
		if err := c.stopRealNode(); err != nil {
			errs = append(errs, fmt.Errorf("real node teardown: %w", err))
		}
	}
	if c.ownsDir && c.dir != "" && os.Getenv("MLPLANE_KEEP_CLUSTER_DIR") == "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}
