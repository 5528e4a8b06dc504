package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// newConfigOnlyRealNode is a cluster whose real node writes its
// configuration into a temporary directory; nothing runs.
func newConfigOnlyRealNode(t *testing.T) *Cluster {
	t.Helper()
	c := New(Options{Dir: t.TempDir(), BinDir: "/opt/mlplane/bin", RealNode: &RealNodeOptions{}})
	if err := c.init(); err != nil {
		t.Fatal(err)
	}
	c.real.dir = c.path("realnode")
	c.real.regAddr = "127.0.0.1:5005"
	for _, d := range []string{"containerd", "cni/net.d", "kubelet"} {
		if err := os.MkdirAll(c.real.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRealNodeRegistryHosts(t *testing.T) {
	c := newConfigOnlyRealNode(t)
	if err := c.writeRegistryHosts(); err != nil {
		t.Fatal(err)
	}
	for dir, server := range map[string]string{
		// ghcr.io/mlplane/* resolves to the local registry, with no
		// fallback to the internet: the server itself is local
		"ghcr.io":        "http://127.0.0.1:5005",
		"127.0.0.1:5005": "http://127.0.0.1:5005",
		// every other registry: a closed local port
		"_default": "http://127.0.0.1:1",
	} {
		got := readFile(t, c.real.path("containerd", "certs.d", dir, "hosts.toml"))
		for _, want := range []string{`server = "` + server + `"`, `[host."` + server + `"]`} {
			if !strings.Contains(got, want) {
				t.Errorf("certs.d/%s/hosts.toml lacks %s:\n%s", dir, want, got)
			}
		}
	}
}

func TestRealNodeContainerdConfig(t *testing.T) {
	if _, err := lookPath("runc"); err != nil {
		t.Skip("SKIPPED, NOT PASSED: no runc (make tools installs it)")
	}
	c := newConfigOnlyRealNode(t)
	if _, err := c.containerd(); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, c.real.path("containerd", "config.toml"))
	for _, want := range []string{
		"version = 3",
		"restrict_oom_score_adj = true",
		"netns_mounts_under_state_dir = true",
		`sandbox = "` + PauseImage + `"`,
		`config_path = "` + c.real.path("containerd", "certs.d") + `"`,
		`runtime_path = "/opt/mlplane/bin/containerd-shim-runc-v2"`,
		`bin_dirs = ["/opt/mlplane/bin/cni"]`,
		`Root = "` + c.real.path("runc") + `"`,
		"SystemdCgroup = false",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config.toml lacks %s", want)
		}
	}
	conf := readFile(t, c.real.path("cni", "net.d", "10-mlplane-realnode.conflist"))
	for _, want := range []string{`"bridge": "` + realBridge + `"`, `"subnet": "` + RealPodCIDR + `"`, `"ipMasq": false`} {
		if !strings.Contains(conf, want) {
			t.Errorf("CNI conflist lacks %s:\n%s", want, conf)
		}
	}
}

func TestRealNodeKubeletConfig(t *testing.T) {
	c := newConfigOnlyRealNode(t)
	comp, err := c.kubelet()
	if err != nil {
		t.Fatal(err)
	}
	var cfg kubeletv1beta1.KubeletConfiguration
	if err := yaml.UnmarshalStrict([]byte(readFile(t, c.real.path("kubelet", "config.yaml"))), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Kind != "KubeletConfiguration" || cfg.FailCgroupV1 == nil || *cfg.FailCgroupV1 ||
		cfg.CgroupDriver != "cgroupfs" || cfg.CgroupRoot != "/"+realCgroup || cfg.Address != RealNodeIP ||
		cfg.ImageGCHighThresholdPercent == nil || *cfg.ImageGCHighThresholdPercent != 100 ||
		cfg.Authentication.X509.ClientCAFile == "" || cfg.Authorization.Mode != kubeletv1beta1.KubeletAuthorizationModeWebhook ||
		cfg.ResolverConfig == nil || *cfg.ResolverConfig != "" || !filepath.IsAbs(cfg.PodLogsDir) {
		t.Errorf("kubelet config: %+v", cfg)
	}
	if len(cfg.RegisterWithTaints) != 1 || cfg.RegisterWithTaints[0].Key != RealNodeLabel {
		t.Errorf("taints %+v, want %s NoSchedule", cfg.RegisterWithTaints, RealNodeLabel)
	}
	args := strings.Join(comp.Args, " ")
	for _, want := range []string{"--root-dir=" + c.real.path("kubelet", "root"), "--node-ip=" + RealNodeIP, "--node-labels=" + RealNodeLabel + "=true"} {
		if !strings.Contains(args, want) {
			t.Errorf("kubelet args lack %s: %s", want, args)
		}
	}
	if !filepath.IsAbs(c.real.path("kubelet", "root")) {
		t.Error("the kubelet's root dir must be absolute")
	}
}
