package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/hack/images/imagebuild"
	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster/hoststate"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// The real node's components (StopComponent, LogPath).
const (
	Containerd = "containerd"
	Kubelet    = "kubelet"
	KubeProxy  = "kube-proxy"
	// Registry is the node's image registry when it runs as a process
	// (RealNodeOptions.RegistryCommand).
	Registry = "registry"
)

// RealNodeLabel marks the real node: it carries the label RealNodeLabel=true
// and the taint RealNodeLabel=true:NoSchedule, so only pods that select and
// tolerate it land there (RealNodePod does both).
const RealNodeLabel = "mlplane.io/real-node"

// The cluster's address ranges. Nothing of them may leave this host: while a
// real node runs, ServiceCIDR, RealNodeBlock and KWOKPodCIDR are routed to a
// port-less local bridge (realSvcLink) and RealPodCIDR to the pods' bridge,
// and an nftables table drops whatever would still go elsewhere.
const (
	// ServiceCIDR is the Service ClusterIP range (kube-apiserver
	// --service-cluster-ip-range).
	ServiceCIDR = "10.96.0.0/16"
	// KWOKPodCIDR is where KWOK invents its fake pods' IPs.
	KWOKPodCIDR = "10.0.0.0/16"
	// RealNodeBlock holds the real node's pod range and its address.
	RealNodeBlock = "10.244.0.0/16"
	// RealPodCIDR is the real node's pod range, on the bridge realBridge.
	RealPodCIDR = "10.244.0.0/24"
	// RealNodeIP is the real node's address, held by realSvcLink: the
	// kubelet listens there and kube-apiserver binds to it (local only),
	// so that pods reach the API through the kubernetes Service.
	RealNodeIP     = "10.244.255.1"
	realPodGateway = "10.244.0.1"
)

// Host names the real node owns. The kernel here has no dummy driver, so a
// bridge without ports holds the service range (kube-proxy's IPVS mode uses
// a dummy link the same way).
const (
	realBridge  = "mlpbr0"
	realSvcLink = "mlpsvc0"
	// guardTable is the nftables table (family inet) that drops what
	// would leave the host from the cluster's ranges.
	guardTable = "mlplane-realnode"
	// realCgroup is the kubelet's cgroupRoot, in every hierarchy.
	realCgroup = "mlplane-realnode"
	// DefaultRealNodeStateDir holds the host baseline (baseline.json) and
	// the lock: one real node per host, and a crashed run is cleaned up by
	// the next one.
	DefaultRealNodeStateDir = hoststate.DefaultDir
)

// MirroredRegistries are the registries the real node's containerd
// resolves through the cluster's in-process registry, with no fallback to
// the internet: mlplane's images (ghcr.io/mlplane/*) and the upstream
// kube-scheduler config/mlplane-scheduler runs (registry.k8s.io). Every other
// registry resolves to a closed local port.
var MirroredRegistries = []string{"ghcr.io", "registry.k8s.io"}

// Images the real node serves from the in-process registry.
const (
	ImageRepoPrefix = "ghcr.io/mlplane/"
	// PauseImage is the pod sandbox image (podbin without flags).
	PauseImage = ImageRepoPrefix + "pause:local"
	// PodbinImage runs podbin; with args -http=:8080 it answers HTTP.
	PodbinImage = ImageRepoPrefix + "podbin:local"
)

// RealNodeOptions configures the real node (Options.RealNode).
type RealNodeOptions struct {
	// Name of the node. Default "mlplane-real-0".
	Name string
	// StateDir holds the host baseline and the lock. Default
	// DefaultRealNodeStateDir.
	StateDir string
	// RegistryCommand runs the registry the node pulls from as a process
	// (argv; "--addr=127.0.0.1:PORT" is appended) that must serve the OCI
	// distribution API there, for example `demo registry`. The process
	// inherits the host lock as its fd 3 and so holds it while it runs:
	// with Options.Detach (make demo) the node outlives this process, and
	// no other real node starts until Down. Default: go-containerregistry's
	// registry in this process, which a detached cluster cannot use.
	RegistryCommand []string
}

// realNode is the real node's state in a Cluster.
type realNode struct {
	opts     RealNodeOptions
	dir      string // <cluster dir>/realnode
	lock     *hoststate.Lock
	base     *hoststate.Snapshot
	registry *imagebuild.Registry // nil when it runs as a process
	regAddr  string               // 127.0.0.1:PORT
}

func (r *realNode) path(elem ...string) string {
	return filepath.Join(append([]string{r.dir}, elem...)...)
}

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

// RealNodeName is the real node's name, "" without one.
func (c *Cluster) RealNodeName() string {
	if c.real == nil {
		return ""
	}
	return c.real.opts.Name
}

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

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// routeClusterRanges creates realSvcLink holding RealNodeIP with routes for
// the service, node and KWOK ranges, and realBridge holding the pods'
// gateway, both up, after checking that no host route overlaps them.
func routeClusterRanges() error {
	for _, cidr := range []string{ServiceCIDR, RealNodeBlock, KWOKPodCIDR} {
		n := mustCIDR(cidr)
		rs, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil && r.Dst.IP.To4() != nil && (r.Dst.Contains(n.IP) || n.Contains(r.Dst.IP)) {
				if ones, _ := r.Dst.Mask.Size(); ones > 0 {
					return fmt.Errorf("the cluster range %s overlaps the host's route %s: the real node cannot run here", cidr, r.Dst)
				}
			}
		}
	}
	nodeIP := net.ParseIP(RealNodeIP)
	svc := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: realSvcLink}}
	if err := netlink.LinkAdd(svc); err != nil {
		return fmt.Errorf("add link %s: %w", realSvcLink, err)
	}
	if err := netlink.AddrAdd(svc, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP, Mask: net.CIDRMask(32, 32)}}); err != nil {
		return fmt.Errorf("address %s on %s: %w", RealNodeIP, realSvcLink, err)
	}
	if err := netlink.LinkSetUp(svc); err != nil {
		return err
	}
	for _, cidr := range []string{ServiceCIDR, RealNodeBlock, KWOKPodCIDR} {
		rt := &netlink.Route{LinkIndex: svc.Attrs().Index, Dst: mustCIDR(cidr), Src: nodeIP, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(rt); err != nil {
			return fmt.Errorf("route %s dev %s: %w", cidr, realSvcLink, err)
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: realBridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add link %s: %w", realBridge, err)
	}
	gw := mustCIDR(RealPodCIDR)
	gw.IP = net.ParseIP(realPodGateway).To4()
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: gw}); err != nil {
		return fmt.Errorf("address %s on %s: %w", gw, realBridge, err)
	}
	return netlink.LinkSetUp(br)
}

// ifname is an interface name as nftables compares it (NUL padded).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// addGuardTable adds the inet table guardTable: whatever the pods' bridge
// would forward anywhere but back to the bridge is dropped (pods have no way
// out of this host), and so is any packet to the cluster's ranges that would
// leave through a link other than the cluster's own or loopback.
func addGuardTable() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: guardTable})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(realBridge)},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(realBridge)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityFilter})
	for _, cidr := range []string{ServiceCIDR, RealNodeBlock, KWOKPodCIDR} {
		n := mustCIDR(cidr)
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			// ip daddr & mask == net
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: n.Mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.IP.To4()},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		}
		for _, l := range []string{realBridge, realSvcLink, "lo"} {
			exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(l)})
		}
		exprs = append(exprs, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table inet %s: %w", guardTable, err)
	}
	return nil
}

// GuardDrops counts the packets the guard table dropped so far: what pods
// tried to send off the host, and what would have left it for the cluster's
// ranges. Dropped packets did not leave; a test logs them to find who sent
// them.
func GuardDrops() (forwarded, leaving uint64, err error) {
	c, err := nftables.New()
	if err != nil {
		return 0, 0, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: guardTable}
	for _, chain := range []string{"forward", "postrouting"} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
		if err != nil {
			return 0, 0, fmt.Errorf("nftables table inet %s chain %s: %w", guardTable, chain, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					if chain == "forward" {
						forwarded += ctr.Packets
					} else {
						leaving += ctr.Packets
					}
				}
			}
		}
	}
	return forwarded, leaving, nil
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

// startRealNode starts the registry, containerd, the kubelet and kube-proxy,
// and waits until the node is Ready.
func (c *Cluster) startRealNode(ctx context.Context) error {
	r := c.real
	start := time.Now()
	if err := c.startRegistry(ctx); err != nil {
		return err
	}
	if err := c.pushPodbinImages(ctx); err != nil {
		return err
	}
	for _, step := range []func() (*component, error){c.containerd, c.kubelet, c.kubeProxy} {
		comp, err := step()
		if err != nil {
			return err
		}
		if err := c.run(ctx, comp); err != nil {
			return err
		}
	}
	c.opts.Logf("cluster: real node %s ready in %s (registry %s, pods %s on %s)", r.opts.Name,
		time.Since(start).Round(time.Millisecond), r.regAddr, RealPodCIDR, realBridge)
	return nil
}

func (c *Cluster) containerd() (*component, error) {
	r := c.real
	runc, err := lookPath("runc")
	if err != nil {
		return nil, err
	}
	sock := r.path("containerd", "containerd.sock")
	cfg := fmt.Sprintf(`# containerd v2 (config version 3): the real node's private instance.
version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.nri.v1.nri"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[6]q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %[7]q

[plugins."io.containerd.cri.v1.runtime"]
  # root lacks CAP_SYS_RESOURCE on these machines: runc cannot set a
  # sandbox's oom_score_adj -998; clamp to containerd's own (docs/local-cluster.md, "Settings and the errors behind them")
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = %[8]q
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[9]q
        Root = %[10]q
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%[11]q]
    conf_dir = %[12]q

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, r.path("containerd", "root"), r.path("containerd", "state"), sock, sock+".ttrpc", r.path("containerd", "opt"),
		PauseImage, r.path("containerd", "certs.d"), c.Bin("containerd-shim-runc-v2"), runc, r.path("runc"),
		c.Bin("cni"), r.path("cni", "net.d"))
	cfgPath := r.path("containerd", "config.toml")
	if err := writeFileAtomic(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if err := c.writeRegistryHosts(); err != nil {
		return nil, err
	}
	if err := c.writeCNIConfig(); err != nil {
		return nil, err
	}
	comp := c.newComponent(Containerd, "containerd", "--config="+cfgPath)
	// the shim from BinDir; nft (portmap's backend) and runc from Debian
	comp.Env = []string{"PATH=" + c.opts.BinDir + ":/usr/sbin:/sbin:" + os.Getenv("PATH")}
	comp.ready = func(ctx context.Context) error {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return comp, nil
}

// writeRegistryHosts points ghcr.io (ImageRepoPrefix's registry) at the
// local registry with no fallback, and every other registry at a closed
// local port: no image pull leaves this host.
func (c *Cluster) writeRegistryHosts() error {
	r := c.real
	local := "http://" + r.regAddr
	hosts := map[string]string{r.regAddr: local, "_default": "http://127.0.0.1:1"}
	for _, reg := range MirroredRegistries {
		hosts[reg] = local
	}
	for dir, server := range hosts {
		body := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, server)
		d := r.path("containerd", "certs.d", dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(d, "hosts.toml"), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) writeCNIConfig() error {
	r := c.real
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "mlplane-realnode",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "backend": "nftables"}
  ]
}
`, realBridge, RealPodCIDR, realPodGateway, r.path("cni", "ipam"))
	return writeFileAtomic(r.path("cni", "net.d", "10-mlplane-realnode.conflist"), []byte(conf), 0o644)
}

func (c *Cluster) kubelet() (*component, error) {
	r := c.real
	port, err := c.port("kubelet")
	if err != nil {
		return nil, err
	}
	healthz, err := c.port("kubelet-healthz")
	if err != nil {
		return nil, err
	}
	cfg := kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: kubeletv1beta1.SchemeGroupVersion.String(), Kind: "KubeletConfiguration"},
		// these machines have cgroup v1 (+ cgroup2 at /sys/fs/cgroup/unified)
		FailCgroupV1:             ptr.To(false),
		CgroupDriver:             "cgroupfs",
		CgroupRoot:               "/" + realCgroup,
		ContainerRuntimeEndpoint: "unix://" + r.path("containerd", "containerd.sock"),
		Address:                  RealNodeIP,
		Port:                     int32(port),
		ReadOnlyPort:             0,
		HealthzBindAddress:       "127.0.0.1",
		HealthzPort:              ptr.To(int32(healthz)),
		Authentication: kubeletv1beta1.KubeletAuthentication{
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: c.path("pki", "ca.crt")},
		},
		Authorization: kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		ClusterDomain: "cluster.local",
		// no cluster DNS, and the host's resolvers are outside: no DNS in pods
		ResolverConfig:      ptr.To(""),
		PodLogsDir:          r.path("kubelet", "pods-logs"),
		FailSwapOn:          ptr.To(false),
		RotateCertificates:  false,
		ServerTLSBootstrap:  false,
		MaxPods:             110,
		SerializeImagePulls: ptr.To(false),
		// images cannot come back once collected: never collect them
		ImageGCHighThresholdPercent: ptr.To(int32(100)),
		ImageGCLowThresholdPercent:  ptr.To(int32(99)),
		EvictionHard: map[string]string{"memory.available": "100Mi", "nodefs.available": "1%",
			"imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		RegisterWithTaints:        []corev1.Taint{{Key: RealNodeLabel, Value: "true", Effect: corev1.TaintEffectNoSchedule}},
		NodeStatusReportFrequency: metav1.Duration{Duration: 10 * time.Second},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := r.path("kubelet", "config.yaml")
	if err := writeFileAtomic(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	comp := c.newComponent(Kubelet, "kubelet",
		"--config="+cfgPath,
		"--kubeconfig="+c.path("config", "kubelet.kubeconfig"),
		"--root-dir="+r.path("kubelet", "root"),
		"--cert-dir="+r.path("kubelet", "pki"),
		"--hostname-override="+r.opts.Name,
		"--node-ip="+RealNodeIP,
		"--node-labels="+RealNodeLabel+"=true",
	)
	comp.ready = func(ctx context.Context) error {
		n, err := c.client.CoreV1().Nodes().Get(ctx, r.opts.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s: Ready=%s: %s", r.opts.Name, cond.Status, cond.Message)
			}
		}
		return fmt.Errorf("node %s: no Ready condition yet", r.opts.Name)
	}
	return comp, nil
}

func (c *Cluster) kubeProxy() (*component, error) {
	r := c.real
	healthz, err := c.port("kube-proxy-healthz")
	if err != nil {
		return nil, err
	}
	metrics, err := c.port("kube-proxy-metrics")
	if err != nil {
		return nil, err
	}
	zero := metav1.Duration{}
	cfg := kubeproxyv1alpha1.KubeProxyConfiguration{
		TypeMeta:           metav1.TypeMeta{APIVersion: kubeproxyv1alpha1.SchemeGroupVersion.String(), Kind: "KubeProxyConfiguration"},
		ClientConnection:   componentbaseconfigv1alpha1.ClientConnectionConfiguration{Kubeconfig: c.path("config", "kube-proxy.kubeconfig")},
		HostnameOverride:   r.opts.Name,
		Mode:               "nftables",
		ClusterCIDR:        RealPodCIDR,
		HealthzBindAddress: fmt.Sprintf("127.0.0.1:%d", healthz),
		MetricsBindAddress: fmt.Sprintf("127.0.0.1:%d", metrics),
		NodePortAddresses:  []string{RealNodeIP + "/32"},
		// leave the host's conntrack sysctls alone (docs/local-cluster.md, "Settings and the errors behind them")
		Conntrack: kubeproxyv1alpha1.KubeProxyConntrackConfiguration{
			MaxPerCore: ptr.To(int32(0)), Min: ptr.To(int32(0)),
			TCPEstablishedTimeout: &zero, TCPCloseWaitTimeout: &zero,
		},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := r.path("kube-proxy.yaml")
	if err := writeFileAtomic(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	comp := c.newComponent(KubeProxy, "kube-proxy", "--config="+cfgPath)
	comp.Env = []string{"PATH=/usr/sbin:/sbin:" + os.Getenv("PATH")}
	comp.ready = runner.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz), false)
	return comp, nil
}

// stopRealNode undoes the real node's host changes once its processes are
// stopped, and verifies the host against the baseline.
func (c *Cluster) stopRealNode() error {
	r := c.real
	var errs []error
	if r.registry != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, r.registry.Close(ctx))
		cancel()
		r.registry = nil
	}
	if r.base != nil {
		start := time.Now()
		err := hoststate.Restore(r.base, c.opts.Logf)
		if err == nil {
			err = os.Remove(baselineFile(r.opts.StateDir))
			r.base = nil
			c.opts.Logf("cluster: host restored and verified in %s", time.Since(start).Round(time.Millisecond))
		}
		errs = append(errs, err)
	}
	errs = append(errs, r.lock.Release())
	r.lock = nil
	return errors.Join(errs...)
}

// RealNodePod adds to pod what lands it on the real node (the node selector
// RealNodeLabel=true and the toleration of its taint) and returns it.
func RealNodePod(pod *corev1.Pod) *corev1.Pod {
	if pod.Spec.NodeSelector == nil {
		pod.Spec.NodeSelector = map[string]string{}
	}
	pod.Spec.NodeSelector[RealNodeLabel] = "true"
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{
		Key: RealNodeLabel, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule,
	})
	return pod
}

// ModelServerDeployment is a Deployment of the example model server
// (examples/model-server) on the real node, as a user writes it: the model
// and the GPU memory as annotations, nothing of mlplane's injection.
type ModelServerDeployment struct {
	// Name is the Deployment's name and its pods' app label.
	Name string
	// Namespace, "" for kubectl's -n.
	Namespace string
	// ModelURI, ModelSecret and GPUMemory are the annotations
	// mlplane.io/model-uri, mlplane.io/model-secret and
	// mlplane.io/gpu-memory ("4Gi").
	ModelURI, ModelSecret, GPUMemory string
	// Image is the model server's image.
	Image string
}

// YAML is the Deployment's manifest, for kubectl apply: one replica, on
// the real node (RealNodePod's selector and toleration), serving on :8080
// with a readiness probe every second.
func (d ModelServerDeployment) YAML() string {
	tmpl := RealNodePod(&corev1.Pod{})
	nodeSel, _ := json.Marshal(tmpl.Spec.NodeSelector)
	tols, _ := json.Marshal(tmpl.Spec.Tolerations)
	ns := ""
	if d.Namespace != "" {
		ns = "\n  namespace: " + d.Namespace
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s%[2]s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
      annotations:
        %[3]s: %[4]q
        %[5]s: %[6]q
        %[7]s: %[8]q
    spec:
      nodeSelector: %[9]s
      tolerations: %[10]s
      terminationGracePeriodSeconds: 1
      containers:
      - name: server
        image: %[11]s
        args: ["--addr=:8080"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        readinessProbe:
          httpGet: {path: /readyz, port: 8080}
          periodSeconds: 1
`, d.Name, ns, api.AnnotationModelURI, d.ModelURI, api.AnnotationModelSecret, d.ModelSecret,
		api.AnnotationGPUMemory, d.GPUMemory, nodeSel, tols, d.Image)
}
