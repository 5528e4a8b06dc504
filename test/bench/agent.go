package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// AgentOptions configure AgentFootprint.
type AgentOptions struct {
	// FakeSpec is the node's GPUs. Default "8x80Gi".
	FakeSpec string
	// PollInterval is the agent's --poll-interval. Default 1s.
	PollInterval time.Duration
	// Warmup runs before the measurement (start-up, first writes). Default 10s.
	Warmup time.Duration
	// Window is the measured time. Default 60s.
	Window time.Duration
	// Logf receives progress lines. Default: discarded.
	Logf func(format string, args ...any)
}

// AgentReport is the node agent's footprint.
type AgentReport struct {
	Machine      Machine `json:"machine"`
	FakeSpec     string  `json:"fake_spec"`
	PollInterval string  `json:"poll_interval"`
	Window       string  `json:"window"`
	// RSSMiB is VmRSS at the end of the window; MaxRSSMiB the most sampled.
	RSSMiB    float64 `json:"rss_mib"`
	MaxRSSMiB float64 `json:"max_rss_mib"`
	// AnonMiB and FileMiB split RSSMiB: the agent's own memory and the
	// resident pages of its binary and libraries (runner.Usage).
	AnonMiB float64 `json:"anon_mib"`
	FileMiB float64 `json:"file_mib"`
	// CPUSeconds is utime+stime over the window; CPUPercent of one core.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPercent float64 `json:"cpu_percent"`
}

// AgentFootprint adds one KWOK node to c, runs bin/node-agent on it with the
// fake backend against c's API server, and measures its resident memory and
// CPU time over Window after Warmup.
func AgentFootprint(ctx context.Context, c *cluster.Cluster, o AgentOptions) (*AgentReport, error) {
	if o.FakeSpec == "" {
		o.FakeSpec = "8x80Gi"
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 10 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 60 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if !c.HasBin("node-agent") {
		return nil, fmt.Errorf("%s not found: run make build", c.Bin("node-agent"))
	}
	nodes, err := c.AddGPUNodes(ctx, "1x"+o.FakeSpec, cluster.NodeOptions{Prefix: "footprint-", Publisher: cluster.PublishNone})
	if err != nil {
		return nil, err
	}
	var ports [2]int
	for i := range ports {
		if ports[i], err = runner.FreePort(); err != nil {
			return nil, err
		}
	}
	agent := &runner.Process{
		Name:    "node-agent",
		Path:    c.Bin("node-agent"),
		LogPath: filepath.Join(c.Dir(), "logs", "bench-node-agent.log"),
		Args: []string{"run",
			"--node-name=" + nodes[0],
			"--kubeconfig=" + c.Kubeconfig(),
			"--backend=fake",
			"--fake-spec=" + o.FakeSpec,
			"--poll-interval=" + o.PollInterval.String(),
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[0]),
			fmt.Sprintf("--health-addr=127.0.0.1:%d", ports[1]),
		},
	}
	if err := agent.Start(); err != nil {
		return nil, err
	}
	defer agent.Stop(stopGrace)
	if err := agent.WaitReady(ctx, time.Minute, runner.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[1]), false)); err != nil {
		return nil, err
	}
	o.Logf("node agent on %s: warm-up %v, then %v measured", nodes[0], o.Warmup, o.Window)
	if err := sleepCtx(ctx, o.Warmup); err != nil {
		return nil, err
	}
	fp, err := sampleUsage(ctx, agent.PID(), o.Window)
	if err != nil {
		return nil, fmt.Errorf("node agent: %w; log:\n%s", err, agent.Tail(20))
	}
	return &AgentReport{
		Machine: ThisMachine(), FakeSpec: o.FakeSpec, PollInterval: o.PollInterval.String(), Window: fp.elapsed.Round(time.Second).String(),
		RSSMiB: mib(fp.last.RSSBytes), MaxRSSMiB: mib(fp.maxRSS), AnonMiB: mib(fp.last.AnonBytes), FileMiB: mib(fp.last.FileBytes),
		CPUSeconds: fp.cpu.Seconds(), CPUPercent: 100 * fp.cpu.Seconds() / fp.elapsed.Seconds(),
	}, nil
}

// footprint is a process's usage sampled every second over a window.
type footprint struct {
	last    runner.Usage  // at the end
	maxRSS  int64         // the most resident memory sampled, bytes
	cpu     time.Duration // CPU time used over the window
	elapsed time.Duration // the window as it was
}

// sampleUsage reads pid's usage at the start, then every second for
// window.
func sampleUsage(ctx context.Context, pid int, window time.Duration) (footprint, error) {
	before, err := runner.ReadUsage(pid)
	if err != nil {
		return footprint{}, err
	}
	start := time.Now()
	fp := footprint{last: before, maxRSS: before.RSSBytes}
	for time.Since(start) < window {
		if err := sleepCtx(ctx, time.Second); err != nil {
			return footprint{}, err
		}
		if fp.last, err = runner.ReadUsage(pid); err != nil {
			return footprint{}, err
		}
		fp.maxRSS = max(fp.maxRSS, fp.last.RSSBytes)
	}
	fp.elapsed, fp.cpu = time.Since(start), fp.last.CPU-before.CPU
	return fp, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WriteText writes the footprint as one line.
func (r *AgentReport) WriteText(w io.Writer) error {
	_, err := fmt.Fprintf(w, "node agent (fake %s, poll %s): RSS %.1f MiB (max %.1f; %.1f anonymous, %.1f file pages), CPU %.2f s over %s = %.2f%% of one core\n",
		r.FakeSpec, r.PollInterval, r.RSSMiB, r.MaxRSSMiB, r.AnonMiB, r.FileMiB, r.CPUSeconds, r.Window, r.CPUPercent)
	return err
}
