package hoststate

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestDiff(t *testing.T) {
	base := &Snapshot{
		Sysctls: map[string]string{"vm.overcommit_memory": "0", "kernel.panic": "1"},
		Links:   []string{"eth0", "lo"},
		Mounts:  []string{"/x"},
		Cgroups: []string{"cpu/mlplane"},
	}
	now := &Snapshot{
		Sysctls:  map[string]string{"vm.overcommit_memory": "1", "kernel.panic": "1"},
		Links:    []string{"eth0", "lo", "mlpbr0"},
		Mounts:   []string{"/x", "/x"}, // a second mount on the same point
		NFTables: []string{"ip kube-proxy"},
	}
	want := []string{
		`sysctl vm.overcommit_memory = "1", was "0"`,
		"link added: mlpbr0",
		"nftables table added: ip kube-proxy",
		"mount added: /x",
		"cgroup removed: cpu/mlplane",
	}
	if d := cmp.Diff(want, Diff(base, now)); d != "" {
		t.Errorf("Diff (-want +got):\n%s", d)
	}
	if d := Diff(base, base); len(d) != 0 {
		t.Errorf("Diff(base, base) = %v, want none", d)
	}
}

func TestSysctlPath(t *testing.T) {
	if got, want := SysctlPath("net.bridge.bridge-nf-call-iptables"), "/proc/sys/net/bridge/bridge-nf-call-iptables"; got != want {
		t.Errorf("SysctlPath = %q, want %q", got, want)
	}
}

func TestSaveLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "baseline.json")
	if s, err := Load(p); s != nil || err != nil {
		t.Fatalf("Load of a missing file = %v, %v; want nil, nil", s, err)
	}
	s := &Snapshot{Spec: Spec{Links: []string{"a"}}, Sysctls: map[string]string{"kernel.panic": "1"}, Links: []string{"lo"}}
	if err := s.Save(p); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(s, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file: a second open in this process
	// conflicts just as another process would.
	if _, err := Acquire(dir); err == nil || !strings.Contains(err.Error(), "another real node") {
		t.Errorf("second Acquire: %v, want held", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
}

// TestLockSharedWithChild: a child process given the lock's File keeps the
// lock after this process releases it (a detached make demo registry), and
// frees it when it exits.
func TestLockSharedWithChild(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "60")
	child.ExtraFiles = []*os.File{l.File()}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(dir); !errors.Is(err, ErrHeld) {
		t.Fatalf("Acquire while the child holds the lock: %v, want ErrHeld", err)
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after the child exited: %v", err)
	}
	l2.Release()
}

// TestRestoreRoundTrip changes the host the way a node does (a link, an
// nftables table, a cgroup with a process in it, a mount, a sysctl, a path)
// and checks that Restore undoes all of it. Root only.
func TestRestoreRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED, NOT PASSED: needs root (links, mounts, cgroups, sysctls)")
	}
	const (
		link   = "mlphs-test0"
		table  = "mlplane-hoststate-test"
		cgName = "mlplane-hoststate-test"
		sysctl = "kernel.keys.root_maxkeys"
	)
	// not while a real node (another package's test) changes the host
	lock, err := AcquireWait(DefaultDir, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	created := filepath.Join(dir, "created")
	sleeper := filepath.Join(dir, "sleep")
	if err := copyFile("/bin/sleep", sleeper); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Sysctls:     []string{sysctl},
		Links:       []string{link},
		CgroupNames: []string{cgName},
		MountRoots:  []string{dir},
		Paths:       []string{created},
		Executables: []string{sleeper},
	}
	// A table that was there before, with a chain (as iptables-nft's
	// "ip filter" INPUT): a node adds a KUBE- chain and a jump to it.
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	old := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table + "-old"})
	input := c.AddChain(&nftables.Chain{Name: "INPUT", Table: old})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.DelTable(old)
		if err := c.Flush(); err != nil {
			t.Errorf("delete table %s: %v", old.Name, err)
		}
	})
	base, err := Take(spec)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever happens below, leave the host as it was.
	t.Cleanup(func() {
		if err := Restore(base, t.Logf); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: link}}); err != nil {
		t.Fatal(err)
	}
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	kube := c.AddChain(&nftables.Chain{Name: "KUBE-FIREWALL", Table: old})
	c.AddRule(&nftables.Rule{Table: old, Chain: kube, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	c.AddRule(&nftables.Rule{Table: old, Chain: input, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: kube.Name}}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(created, 0o755); err != nil {
		t.Fatal(err)
	}
	oldValue := base.Sysctls[sysctl]
	n, _ := strconv.Atoi(oldValue)
	if err := WriteSysctl(sysctl, strconv.Itoa(n+1)); err != nil {
		t.Fatal(err)
	}
	cgDirs, err := CgroupDirs(cgName)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sleeper, "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait() //nolint:errcheck // reaped when Restore kills it
	for _, d := range cgDirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(filepath.Dir(d), "cpuset") {
			continue // a new cpuset has no cpus until they are copied
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Logf("join %s: %v", d, err)
		}
	}

	changed, err := Take(spec)
	if err != nil {
		t.Fatal(err)
	}
	d := strings.Join(Diff(base, changed), "\n")
	for _, want := range []string{"link added: " + link, "nftables table added: inet " + table, "mount added: " + mnt,
		"nftables chain added: ip " + table + "-old KUBE-FIREWALL",
		"path added: " + created, "sysctl " + sysctl, "cgroup added: ", "process added: "} {
		if !strings.Contains(d, want) {
			t.Errorf("Diff after the changes lacks %q:\n%s", want, d)
		}
	}
	if err := Restore(base, t.Logf); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got, _ := ReadSysctl(sysctl); got != oldValue {
		t.Errorf("%s = %s after Restore, want %s", sysctl, got, oldValue)
	}
	if rules, err := c.GetRules(old, input); err != nil || len(rules) != 0 {
		t.Errorf("%s INPUT after Restore: %d rules (%v), want the jump gone", old.Name, len(rules), err)
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
