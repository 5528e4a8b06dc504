package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/cluster/runner"
)

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
	if err := renameio.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
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
		if err := renameio.WriteFile(filepath.Join(d, "hosts.toml"), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
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
	if err := renameio.WriteFile(cfgPath, b, 0o644); err != nil {
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
	if err := renameio.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	comp := c.newComponent(KubeProxy, "kube-proxy", "--config="+cfgPath)
	comp.Env = []string{"PATH=/usr/sbin:/sbin:" + os.Getenv("PATH")}
	comp.ready = runner.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz), false)
	return comp, nil
}
