// Package hoststate records what a real Kubernetes node may change on this
// host (sysctls, links and routes, nftables tables and chains, mounts,
// cgroups, paths, processes), undoes those changes, and checks that the host
// is back where it was.
//
// The local cluster's real node (internal/cluster) takes a Snapshot before
// anything starts and saves it in a fixed place (Dir), so that a later run
// can undo what a crashed one left behind before it takes its own. Restore
// undoes and then verifies: whatever still differs is an error.
package hoststate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/moby/sys/mountinfo"
	"github.com/prometheus/procfs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// Spec names what a node may change, and so what Restore may undo.
type Spec struct {
	// Sysctls are dotted names ("vm.overcommit_memory") whose values are
	// recorded and written back.
	Sysctls []string `json:"sysctls"`
	// Links are the network links the node creates (bridge, dummy); they
	// and new veths enslaved to them are deleted.
	Links []string `json:"links"`
	// CgroupNames are directories directly below every cgroup hierarchy
	// (/sys/fs/cgroup/*/NAME) that the node creates; their processes are
	// killed and the directories removed.
	CgroupNames []string `json:"cgroupNames"`
	// MountRoots: every mount at or below one of them is the node's.
	MountRoots []string `json:"mountRoots"`
	// Paths the node may create on the host; removed if they were absent.
	Paths []string `json:"paths"`
	// Executables whose processes are the node's (absolute paths): the
	// container shims outlive a crashed run, for one.
	Executables []string `json:"executables"`
}

// Snapshot is the host's state in the terms of a Spec.
type Snapshot struct {
	Taken   time.Time         `json:"taken"`
	Spec    Spec              `json:"spec"`
	Sysctls map[string]string `json:"sysctls"`
	// Links are link names; Routes are the main table's routes, rendered.
	Links  []string `json:"links"`
	Routes []string `json:"routes"`
	// NFTables are "family table", NFChains "family table chain".
	NFTables []string `json:"nftables"`
	NFChains []string `json:"nfchains"`
	// Mounts are mount points under Spec.MountRoots, once per mount.
	Mounts []string `json:"mounts"`
	// Cgroups are directories under Spec.CgroupNames, relative to
	// /sys/fs/cgroup.
	Cgroups []string `json:"cgroups"`
	// Paths are those of Spec.Paths that exist.
	Paths []string `json:"paths"`
	// Processes are "pid exe" of processes running Spec.Executables.
	Processes []string `json:"processes"`
}

// Where the kernel keeps sysctls and cgroups; variables for tests.
var (
	procSys    = "/proc/sys"
	cgroupRoot = "/sys/fs/cgroup"
)

// Take records the host's state for spec.
func Take(spec Spec) (*Snapshot, error) {
	s := &Snapshot{Taken: time.Now().UTC(), Spec: spec, Sysctls: map[string]string{}}
	var errs []error
	for _, name := range spec.Sysctls {
		v, err := ReadSysctl(name)
		if errors.Is(err, os.ErrNotExist) {
			continue // not on this kernel (a module not loaded)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Sysctls[name] = v
	}
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		s.Links = append(s.Links, l.Attrs().Name)
	}
	s.Routes, err = routes(links)
	errs = append(errs, err)
	s.NFTables, s.NFChains, err = nftState()
	errs = append(errs, err)
	s.Mounts, err = mounts(spec.MountRoots)
	errs = append(errs, err)
	s.Cgroups, err = cgroups(spec.CgroupNames)
	errs = append(errs, err)
	for _, p := range spec.Paths {
		if _, err := os.Lstat(p); err == nil {
			s.Paths = append(s.Paths, p)
		}
	}
	for _, p := range processes(spec.Executables) {
		s.Processes = append(s.Processes, fmt.Sprintf("%d %s", p.pid, p.exe))
	}
	for _, l := range [][]string{s.Links, s.Routes, s.NFTables, s.NFChains, s.Mounts, s.Cgroups, s.Paths, s.Processes} {
		sort.Strings(l)
	}
	return s, errors.Join(errs...)
}

// Diff lists how now differs from base, one line per difference; empty when
// they are the same. The time taken is not compared.
func Diff(base, now *Snapshot) []string {
	var out []string
	names := make([]string, 0, len(base.Sysctls))
	for k := range base.Sysctls {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if v, ok := now.Sysctls[k]; ok && v != base.Sysctls[k] {
			out = append(out, fmt.Sprintf("sysctl %s = %q, was %q", k, v, base.Sysctls[k]))
		}
	}
	for _, l := range []struct {
		what      string
		base, now []string
	}{
		{"link", base.Links, now.Links},
		{"route", base.Routes, now.Routes},
		{"nftables table", base.NFTables, now.NFTables},
		{"nftables chain", base.NFChains, now.NFChains},
		{"mount", base.Mounts, now.Mounts},
		{"cgroup", base.Cgroups, now.Cgroups},
		{"path", base.Paths, now.Paths},
		{"process", base.Processes, now.Processes},
	} {
		added, removed := multisetDiff(l.base, l.now)
		for _, a := range added {
			out = append(out, fmt.Sprintf("%s added: %s", l.what, a))
		}
		for _, r := range removed {
			out = append(out, fmt.Sprintf("%s removed: %s", l.what, r))
		}
	}
	return out
}

// multisetDiff returns what now has more of than base, and what it has less
// of (a mount point may hold several mounts).
func multisetDiff(base, now []string) (added, removed []string) {
	count := map[string]int{}
	for _, b := range base {
		count[b]++
	}
	for _, n := range now {
		count[n]--
	}
	for k, c := range count {
		for ; c < 0; c++ {
			added = append(added, k)
		}
		for ; c > 0; c-- {
			removed = append(removed, k)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	return added, removed
}

// Restore undoes what happened since base, in the terms of base.Spec: it
// kills the node's processes, unmounts, deletes links, nftables tables and
// chains, removes cgroups and paths, and writes sysctls back. Then it takes
// a new snapshot; any difference left is in the error. logf receives one
// line per change made.
func Restore(base *Snapshot, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	spec := base.Spec
	var errs []error
	errs = append(errs, killAll(base, logf))
	errs = append(errs, unmountNew(base, logf))
	errs = append(errs, deleteLinks(base, logf))
	errs = append(errs, deleteNFT(base, logf))
	errs = append(errs, removeCgroups(base, logf))
	for _, name := range sortedKeys(base.Sysctls) {
		want := base.Sysctls[name]
		got, err := ReadSysctl(name)
		if err != nil || got == want {
			continue
		}
		if err := WriteSysctl(name, want); err != nil {
			errs = append(errs, err)
			continue
		}
		logf("hoststate: sysctl %s %s -> %s", name, got, want)
	}
	for _, p := range spec.Paths {
		if slices.Contains(base.Paths, p) {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
			logf("hoststate: removed %s", p)
		}
	}
	now, err := Take(spec)
	errs = append(errs, err)
	if now != nil {
		if d := Diff(base, now); len(d) > 0 {
			errs = append(errs, fmt.Errorf("host differs from the state recorded at %s:\n  %s", base.Taken.Format(time.RFC3339), strings.Join(d, "\n  ")))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// SysctlPath is the /proc/sys file of a dotted sysctl name. Dots in a
// name's last part stay dots only for interface names, which no Spec here
// uses.
func SysctlPath(name string) string {
	return filepath.Join(procSys, strings.ReplaceAll(name, ".", "/"))
}

// ReadSysctl reads a sysctl through procfs: its fields joined by one
// space (a single value, trimmed, for every sysctl a Spec names here).
func ReadSysctl(name string) (string, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return "", err
	}
	f, err := fs.SysctlStrings(name)
	if err != nil {
		return "", err
	}
	return strings.Join(f, " "), nil
}

// WriteSysctl sets a sysctl (procfs only reads them).
func WriteSysctl(name, value string) error {
	return os.WriteFile(SysctlPath(name), []byte(value), 0o644)
}

func routes(links []netlink.Link) ([]string, error) {
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	var out []string
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteList(nil, family)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			dst := "default"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			s := dst
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			if r.Type == unix.RTN_BLACKHOLE {
				s = "blackhole " + s
			}
			out = append(out, s+" dev "+byIndex[r.LinkIndex])
		}
	}
	return out, nil
}

var nfFamilies = map[nftables.TableFamily]string{
	nftables.TableFamilyINet: "inet", nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6",
	nftables.TableFamilyARP: "arp", nftables.TableFamilyNetdev: "netdev", nftables.TableFamilyBridge: "bridge",
}

func familyName(f nftables.TableFamily) string {
	if n, ok := nfFamilies[f]; ok {
		return n
	}
	return strconv.Itoa(int(f))
}

func nftState() (tables, chains []string, err error) {
	c, err := nftables.New()
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: %w", err)
	}
	ts, err := c.ListTables()
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range ts {
		tables = append(tables, familyName(t.Family)+" "+t.Name)
	}
	cs, err := c.ListChains()
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	for _, ch := range cs {
		chains = append(chains, familyName(ch.Table.Family)+" "+ch.Table.Name+" "+ch.Name)
	}
	return tables, chains, nil
}

func mounts(roots []string) ([]string, error) {
	var out []string
	for _, root := range roots {
		ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
		if err != nil {
			return nil, fmt.Errorf("mounts under %s: %w", root, err)
		}
		for _, m := range ms {
			out = append(out, m.Mountpoint)
		}
	}
	return out, nil
}

// hierarchies are the cgroup mounts below cgroupRoot (cpu, memory, ...,
// unified on a cgroup v1 host; the root itself on a pure cgroup v2 host).
func hierarchies() ([]string, error) {
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.FSType != "cgroup" && m.FSType != "cgroup2", false
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Mountpoint == cgroupRoot || strings.HasPrefix(m.Mountpoint, cgroupRoot+"/") {
			out = append(out, m.Mountpoint)
		}
	}
	sort.Strings(out)
	return out, nil
}

// CgroupDirs lists, for every hierarchy, the directory name would be.
func CgroupDirs(name string) ([]string, error) {
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = filepath.Join(h, name)
	}
	return out, nil
}

func cgroups(names []string) ([]string, error) {
	var out []string
	for _, name := range names {
		dirs, err := CgroupDirs(name)
		if err != nil {
			return nil, err
		}
		for _, d := range dirs {
			_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
				if err != nil || !e.IsDir() {
					return nil
				}
				rel, _ := filepath.Rel(cgroupRoot, p)
				out = append(out, rel)
				return nil
			})
		}
	}
	return out, nil
}

type proc struct {
	pid int
	exe string
}

func processes(exes []string) []proc {
	if len(exes) == 0 {
		return nil
	}
	procs, _ := procfs.AllProcs()
	var out []proc
	for _, p := range procs {
		if p.PID == os.Getpid() {
			continue
		}
		exe, err := p.Executable()
		if err != nil || exe == "" {
			continue
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		if slices.Contains(exes, exe) {
			out = append(out, proc{p.PID, exe})
		}
	}
	return out
}

// killAll kills the node's processes: those running its executables and
// every process in its cgroups, until none is left (10 s at most).
func killAll(base *Snapshot, logf func(string, ...any)) error {
	var dirs []string
	for _, c := range base.Spec.CgroupNames {
		ds, err := CgroupDirs(c)
		if err != nil {
			return err
		}
		dirs = append(dirs, ds...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pids []int
		for _, p := range processes(base.Spec.Executables) {
			if !slices.Contains(base.Processes, fmt.Sprintf("%d %s", p.pid, p.exe)) {
				pids = append(pids, p.pid)
			}
		}
		for _, d := range dirs {
			pids = append(pids, cgroupPids(d)...)
		}
		pids = slices.Compact(slices.Sorted(slices.Values(pids)))
		pids = slices.DeleteFunc(pids, func(p int) bool { return p == os.Getpid() || !runner.Alive(p) })
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still running after SIGKILL: %v", pids)
		}
		for _, p := range pids {
			name := comm(p)
			if syscall.Kill(p, syscall.SIGKILL) == nil {
				logf("hoststate: killed pid %d (%s)", p, name)
			}
		}
		time.Sleep(100 * time.Millisecond) // polling for the exit of processes we do not parent
	}
}

func cgroupPids(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// comm is pid's command name (proc(5)), "" when it cannot be read.
func comm(pid int) string {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return ""
	}
	c, _ := p.Comm()
	return c
}

// unmountNew detaches every mount under the roots that base does not have,
// deepest first.
func unmountNew(base *Snapshot, logf func(string, ...any)) error {
	var errs []error
	for range 5 { // a lazy unmount can reveal a mount below it
		now, err := mounts(base.Spec.MountRoots)
		if err != nil {
			return err
		}
		added, _ := multisetDiff(base.Mounts, now)
		if len(added) == 0 {
			return nil
		}
		sort.Slice(added, func(i, j int) bool { return len(added[i]) > len(added[j]) })
		errs = errs[:0]
		for _, m := range added {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
				continue
			}
			logf("hoststate: unmounted %s", m)
		}
	}
	return errors.Join(errs...)
}

func deleteLinks(base *Snapshot, logf func(string, ...any)) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	owned := map[int]bool{}
	for _, l := range links {
		if slices.Contains(base.Spec.Links, l.Attrs().Name) {
			owned[l.Attrs().Index] = true
		}
	}
	var errs []error
	// Veths first (their pod's network namespace may outlive the pod), then
	// the node's own links.
	for _, pass := range []func(l netlink.Link) bool{
		func(l netlink.Link) bool { return l.Type() == "veth" && owned[l.Attrs().MasterIndex] },
		func(l netlink.Link) bool { return owned[l.Attrs().Index] },
	} {
		for _, l := range links {
			name := l.Attrs().Name
			if !pass(l) || slices.Contains(base.Links, name) {
				continue
			}
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
				continue
			}
			logf("hoststate: deleted link %s (%s)", name, l.Type())
		}
	}
	return errors.Join(errs...)
}

// deleteNFT deletes every nftables table that base does not have, and new
// KUBE-* chains in tables it has.
func deleteNFT(base *Snapshot, logf func(string, ...any)) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	ts, err := c.ListTables()
	if err != nil {
		return err
	}
	var deleted []string
	for _, t := range ts {
		id := familyName(t.Family) + " " + t.Name
		if !slices.Contains(base.NFTables, id) {
			c.DelTable(t)
			deleted = append(deleted, "table "+id)
		}
	}
	cs, err := c.ListChains()
	if err != nil {
		return err
	}
	// New KUBE-* chains in tables that were there (the kubelet's and
	// kube-proxy's through iptables-nft): their rules go, and so do the
	// rules of older chains that jump to them.
	newKube := map[string]bool{} // "family table chain"
	for _, ch := range cs {
		tid := familyName(ch.Table.Family) + " " + ch.Table.Name
		id := tid + " " + ch.Name
		if slices.Contains(base.NFTables, tid) && !slices.Contains(base.NFChains, id) && strings.HasPrefix(ch.Name, "KUBE-") {
			c.FlushChain(ch)
			deleted = append(deleted, "chain "+id)
			newKube[id] = true
		}
	}
	if len(newKube) > 0 {
		for _, ch := range cs {
			tid := familyName(ch.Table.Family) + " " + ch.Table.Name
			if newKube[tid+" "+ch.Name] || !slices.Contains(base.NFTables, tid) {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return err
			}
			for _, r := range rules {
				for _, e := range r.Exprs {
					if v, ok := e.(*expr.Verdict); ok && newKube[tid+" "+v.Chain] {
						if err := c.DelRule(r); err != nil {
							return err
						}
						deleted = append(deleted, fmt.Sprintf("rule in %s %s jumping to %s", tid, ch.Name, v.Chain))
						break
					}
				}
			}
		}
	}
	if len(deleted) == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete %s: %w", strings.Join(deleted, ", "), err)
	}
	// Chains go once nothing jumps to them any more (their own rules
	// and the jumps to them went in the transaction above).
	for _, ch := range cs {
		id := familyName(ch.Table.Family) + " " + ch.Table.Name + " " + ch.Name
		if slices.Contains(deleted, "chain "+id) {
			c.DelChain(ch)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete chains: %w", err)
	}
	for _, d := range deleted {
		logf("hoststate: deleted nftables %s", d)
	}
	return nil
}

// removeCgroups removes the cgroup directories base does not have, deepest
// first (a cgroup directory goes with rmdir once it has no processes).
func removeCgroups(base *Snapshot, logf func(string, ...any)) error {
	now, err := cgroups(base.Spec.CgroupNames)
	if err != nil {
		return err
	}
	added, _ := multisetDiff(base.Cgroups, now)
	sort.Slice(added, func(i, j int) bool { return len(added[i]) > len(added[j]) })
	var errs []error
	for _, rel := range added {
		p := filepath.Join(cgroupRoot, rel)
		var err error
		for range 50 {
			if err = unix.Rmdir(p); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(100 * time.Millisecond) // a killed process leaves its cgroup a moment later
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", p, err))
		}
	}
	if len(added) > 0 {
		logf("hoststate: removed %d cgroup directories under %s", len(added), strings.Join(base.Spec.CgroupNames, ", "))
	}
	return errors.Join(errs...)
}

// Save writes the snapshot to path (JSON).
func (s *Snapshot) Save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return renameio.WriteFile(path, b, 0o644)
}

// Load reads a snapshot Save wrote; (nil, nil) when there is none.
func Load(path string) (*Snapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// DefaultDir is where the local cluster's real node keeps its baseline and
// its lock; tests that change the host take the same lock.
const DefaultDir = "/run/mlplane-realnode"

// ErrHeld is Acquire's error while another process holds the lock.
var ErrHeld = errors.New("another real node runs on this host")

// Lock is an exclusive lock on a state directory: one real node per host.
type Lock struct{ f *os.File }

// AcquireWait is Acquire, retrying until timeout while another process holds
// the lock (a concurrent test run on the same host).
func AcquireWait(dir string, timeout time.Duration) (*Lock, error) {
	deadline := time.Now().Add(timeout)
	for {
		l, err := Acquire(dir)
		if err == nil || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(time.Second) // polling a lock another process holds
	}
}

// Acquire takes the lock in dir, failing at once when another process holds
// it.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(f.Name())
		f.Close()
		return nil, fmt.Errorf("%s is held (pid %s): %w", f.Name(), strings.TrimSpace(string(b)), ErrHeld)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Lock{f}, nil
}

// File is the locked file: a child process given it (exec.Cmd.ExtraFiles)
// shares the lock, which then lasts until both have closed it.
func (l *Lock) File() *os.File { return l.f }

// Release drops the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// RouteDev is the link the kernel would send a packet to ip through (what
// `ip route get` prints as dev).
func RouteDev(ip net.IP) (string, error) {
	rs, err := netlink.RouteGet(ip)
	if err != nil {
		return "", fmt.Errorf("route get %s: %w", ip, err)
	}
	if len(rs) == 0 {
		return "", fmt.Errorf("route get %s: no route", ip)
	}
	if rs[0].Type == unix.RTN_LOCAL {
		return "lo", nil
	}
	l, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}

// DefaultRouteDevs are the links of the default routes (IPv4 and IPv6).
func DefaultRouteDevs() ([]string, error) {
	var out []string
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(family, &netlink.Route{Dst: nil}, 0)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
				continue
			}
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err == nil && !slices.Contains(out, l.Attrs().Name) {
				out = append(out, l.Attrs().Name)
			}
		}
	}
	return out, nil
}
