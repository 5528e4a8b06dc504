package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mlplane/mlplane/internal/cluster/runner"
	"github.com/prometheus/procfs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Usage is what one program or pod used over a measuring window.
type Usage struct {
	// Name is the program ("kubelet", "containerd-shim x3") or the pod
	// ("namespace/name").
	Name string
	// CPU is the mean CPU over the window, in cores (0.01 = 1% of one core).
	CPU float64
	// RSS is the resident memory at the end of the window, in bytes: the
	// process' VmRSS (summed over the shims) or the pod cgroup's total_rss
	// (anonymous memory, without page cache).
	RSS int64
}

// RealNodeFootprint measures the real node over window: its own programs
// (kubelet, containerd, the containerd shims summed, kube-proxy) from
// /proc (read by procfs), and each pod on it from its cgroup (cgroup v1 cpuacct and memory
// controllers, under the kubelet's cgroupRoot). Pods are named from the
// API server. A shim or pod that goes during the window is left out. It
// errs without a real node or when one of its programs is not running.
func (c *Cluster) RealNodeFootprint(ctx context.Context, window time.Duration) (programs, pods []Usage, err error) {
	if c.real == nil {
		return nil, nil, fmt.Errorf("no real node")
	}
	type progPIDs struct {
		name string
		pids []int
	}
	var progs []progPIDs
	for _, name := range []string{Kubelet, Containerd, KubeProxy} {
		comp, err := c.component(name)
		if err != nil || comp.PID() == 0 {
			return nil, nil, fmt.Errorf("%s is not running", name)
		}
		progs = append(progs, progPIDs{name, []int{comp.PID()}})
	}
	shims, err := pidsByComm("containerd-shim")
	if err != nil {
		return nil, nil, err
	}
	progs = append(progs, progPIDs{fmt.Sprintf("containerd-shim x%d", len(shims)), shims})

	list, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", c.real.opts.Name).String()})
	if err != nil {
		return nil, nil, err
	}
	podDirs := map[string]string{} // name -> cgroup path below the controller
	for _, p := range list.Items {
		matches, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/cpuacct", realCgroup, "kubepods", "*", "pod"+string(p.UID)))
		if len(matches) == 0 {
			matches, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup/cpuacct", realCgroup, "kubepods", "pod"+string(p.UID)))
		}
		if len(matches) == 1 {
			rel, _ := filepath.Rel("/sys/fs/cgroup/cpuacct", matches[0])
			podDirs[p.Namespace+"/"+p.Name] = rel
		}
	}

	// CPU seconds per program pid ("name/pid") and per pod, at both ends
	// of the window, and each program pid's resident memory; what exits or
	// goes meanwhile (a pod deleted) is left out.
	sample := func() (map[string]float64, map[string]int64) {
		cpu, rss := map[string]float64{}, map[string]int64{}
		for _, p := range progs {
			for _, pid := range p.pids {
				if u, err := runner.ReadUsage(pid); err == nil {
					key := fmt.Sprintf("%s/%d", p.name, pid)
					cpu[key], rss[key] = u.CPU.Seconds(), u.RSSBytes
				}
			}
		}
		for name, dir := range podDirs {
			if ns, err := readInt(filepath.Join("/sys/fs/cgroup/cpuacct", dir, "cpuacct.usage")); err == nil {
				cpu[name] = float64(ns) / 1e9
			}
		}
		return cpu, rss
	}
	before, _ := sample()
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-time.After(window):
	}
	after, rssAfter := sample()
	elapsed := time.Since(start).Seconds()
	delta := func(key string) (float64, bool) {
		b, ok1 := before[key]
		a, ok2 := after[key]
		return (a - b) / elapsed, ok1 && ok2
	}
	for _, p := range progs {
		u := Usage{Name: p.name}
		for _, pid := range p.pids {
			key := fmt.Sprintf("%s/%d", p.name, pid)
			cpu, ok := delta(key)
			if !ok {
				continue
			}
			u.CPU += cpu
			u.RSS += rssAfter[key]
		}
		programs = append(programs, u)
	}
	for _, p := range list.Items {
		name := p.Namespace + "/" + p.Name
		cpu, ok := delta(name)
		if !ok {
			continue
		}
		rss, err := memoryStat(filepath.Join("/sys/fs/cgroup/memory", podDirs[name], "memory.stat"), "total_rss")
		if err != nil {
			continue
		}
		pods = append(pods, Usage{Name: name, CPU: cpu, RSS: rss})
	}
	return programs, pods, nil
}

// pidsByComm lists the processes whose comm (proc(5)) starts with prefix.
func pidsByComm(prefix string) ([]int, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, p := range procs {
		if comm, err := p.Comm(); err == nil && strings.HasPrefix(comm, prefix) {
			out = append(out, p.PID)
		}
	}
	return out, nil
}

// memoryStat is key's value in a cgroup v1 memory.stat file, in bytes.
func memoryStat(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == key {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
