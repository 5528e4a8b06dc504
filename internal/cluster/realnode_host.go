package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mlplane/mlplane/internal/cluster/hoststate"
)

// realNodeSysctls are what the kubelet (vm.*, kernel.*), the bridge plugin
// (ip_forward) and kube-proxy may set; all are written back.
var realNodeSysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding",
	"net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-arptables",
	"net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait", "net.netfilter.nf_conntrack_tcp_be_liberal",
}

// realNodePaths are host paths the node's programs create by default; each
// is moved into the node directory where a setting allows, and removed on
// teardown when it was absent before.
var realNodePaths = []string{
	"/run/containerd", // the shims' sockets (containerd's DefaultStateDir, fixed)
	"/var/log/containers", "/var/log/pods", "/var/lib/kubelet", "/var/lib/containerd",
	"/opt/containerd", "/etc/cni", "/opt/cni", "/var/lib/cni", "/run/netns", "/etc/containerd",
}

// realNodeBins are the binaries from BinDir the real node runs.
var realNodeBins = []string{"kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr",
	"cni/bridge", "cni/host-local", "cni/loopback", "cni/portmap"}

// RealNodeSupported says why this host cannot run a real node (nil when it
// can): root, the tools of make tools, runc and nft.
func RealNodeSupported(binDir string) error {
	if os.Geteuid() != 0 {
		return errors.New("the real node needs root (network links, mounts, cgroups)")
	}
	var missing []string
	for _, b := range realNodeBins {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s not found in %s: run make tools", strings.Join(missing, ", "), binDir)
	}
	for _, b := range []string{"runc", "nft"} {
		if _, err := lookPath(b); err != nil {
			return fmt.Errorf("%s not found: run make tools (it installs Debian's runc and nftables)", b)
		}
	}
	return nil
}

// lookPath finds a command in PATH or /usr/sbin (root's PATH may lack it).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// realNodeSpec is what a node with its files in nodeDir and its binaries in
// binDir may change on the host.
func realNodeSpec(binDir, nodeDir string) hoststate.Spec {
	var exes []string
	for _, b := range []string{"kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2"} {
		exes = append(exes, filepath.Join(binDir, b))
	}
	return hoststate.Spec{
		Sysctls:     realNodeSysctls,
		Links:       []string{realBridge, realSvcLink},
		CgroupNames: []string{realCgroup, "kubepods"},
		MountRoots:  []string{nodeDir},
		Paths:       append([]string{nodeDir}, realNodePaths...),
		Executables: exes,
	}
}

// prepareRealNode runs before the control plane: it takes the host lock,
// undoes what a crashed run left, records the baseline, and routes the
// cluster's ranges locally before anything can send to them.
func (c *Cluster) prepareRealNode() error {
	r := c.real
	if err := RealNodeSupported(c.opts.BinDir); err != nil {
		return err
	}
	// a concurrent test run's node goes first
	lock, err := hoststate.AcquireWait(r.opts.StateDir, 3*time.Minute)
	if err != nil {
		return err
	}
	r.lock = lock
	if err := restoreLeftovers(r.opts.StateDir, c.opts.Logf); err != nil {
		return err
	}
	r.dir = c.path("realnode")
	// The baseline comes first: the node's directory is one of the paths
	// a teardown removes (after a crash, the next run does).
	base, err := hoststate.Take(realNodeSpec(c.opts.BinDir, r.dir))
	if err != nil {
		return fmt.Errorf("record the host's state: %w", err)
	}
	if err := base.Save(baselineFile(r.opts.StateDir)); err != nil {
		return err
	}
	r.base = base
	for _, d := range []string{"containerd/certs.d", "cni/net.d", "cni/ipam", "kubelet/root", "kubelet/pods-logs", "runc"} {
		if err := os.MkdirAll(r.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := routeClusterRanges(); err != nil {
		return err
	}
	if err := addGuardTable(); err != nil {
		return err
	}
	return makeCgroupRoot()
}

func baselineFile(stateDir string) string { return filepath.Join(stateDir, "baseline.json") }

// restoreLeftovers undoes a previous run's changes when its baseline is
// still there (it crashed, or was killed, before its teardown).
func restoreLeftovers(stateDir string, logf func(string, ...any)) error {
	prev, err := hoststate.Load(baselineFile(stateDir))
	if err != nil || prev == nil {
		return err
	}
	logf("cluster: a previous real node's baseline (%s) is left: restoring the host first", prev.Taken.Format(time.RFC3339))
	err = hoststate.Restore(prev, logf)
	// Acted on either way: a difference Restore could not undo fails this
	// run, and the next one records the host as it then is.
	if rmErr := os.Remove(baselineFile(stateDir)); err == nil {
		err = rmErr
	}
	if err != nil {
		return fmt.Errorf("restore the host after a previous run: %w", err)
	}
	return nil
}

// CleanupRealNode undoes what a real node left on this host (its baseline in
// stateDir, default DefaultRealNodeStateDir), unless a live one holds the
// lock. make demo-down and Down call it; it is a no-op when nothing is left.
func CleanupRealNode(stateDir string, logf func(string, ...any)) error {
	if stateDir == "" {
		stateDir = DefaultRealNodeStateDir
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := os.Stat(baselineFile(stateDir)); err != nil {
		return nil
	}
	lock, err := hoststate.Acquire(stateDir)
	if err != nil {
		logf("cluster: %v; leaving it alone", err)
		return nil
	}
	defer lock.Release()
	return restoreLeftovers(stateDir, logf)
}

// makeCgroupRoot creates the kubelet's cgroupRoot in every hierarchy (the
// kubelet refuses a root that does not exist); a new cpuset gets its
// parent's cpus and mems, which it does not inherit.
func makeCgroupRoot() error {
	dirs, err := hoststate.CgroupDirs(realCgroup)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %w", filepath.Join(d, f), err)
			}
		}
	}
	return nil
}
