package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

func TestSchedulerConfigGenerated(t *testing.T) {
	b, err := schedulerConfig(nil, "/k/kubeconfig", "mlplane-scheduler", "http://127.0.0.1:1234", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	ext := got["extenders"].([]any)[0].(map[string]any)
	if ext["urlPrefix"] != "http://127.0.0.1:1234" || ext["bindVerb"] != "bind" || ext["nodeCacheCapable"] != true || ext["enableHTTPS"] != false || ext["tlsConfig"] != nil {
		t.Errorf("extender = %v", ext)
	}
	if d := cmp.Diff([]any{map[string]any{"schedulerName": "mlplane-scheduler"}}, got["profiles"]); d != "" {
		t.Errorf("profiles (-want +got):\n%s", d)
	}
	if got["leaderElection"].(map[string]any)["leaderElect"] != false {
		t.Error("leader election must be off")
	}
}

func TestSchedulerConfigFromFile(t *testing.T) {
	base := []byte(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: mlplane-scheduler
  plugins: {score: {disabled: [{name: NodeResourcesFit}]}}
extenders:
- urlPrefix: http://mlplane-extender.mlplane-system.svc:8888
  filterVerb: filter
  bindVerb: bind
`)
	b, err := schedulerConfig(base, "/k", "ignored", "http://127.0.0.1:9", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"urlPrefix: http://127.0.0.1:9", "NodeResourcesFit", "kubeconfig: /k", "qps: 1000"} {
		if !strings.Contains(s, want) {
			t.Errorf("config lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "svc:8888") || strings.Contains(s, "ignored") || strings.Contains(s, "prioritizeVerb") {
		t.Errorf("config kept the in-cluster URL or added to the file's extender:\n%s", s)
	}
	if _, err := schedulerConfig([]byte("kind: Pod"), "/k", "x", "", nil); err == nil {
		t.Error("a file of the wrong kind was accepted")
	}
}

// TestShippedSchedulerConfig renders config/scheduler/config.yaml for the
// local cluster: the extender URL and client connection are local, the
// shipped extender settings stay.
func TestShippedSchedulerConfig(t *testing.T) {
	// The test runs inside the module, next to config/: a missing file is
	// a broken tree, not a reason to skip.
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(filepath.Join(root, ShippedSchedulerConfig))
	if err != nil {
		t.Fatal(err)
	}
	tls := &SchedulerTLS{CertFile: "/c/tls.crt", KeyFile: "/c/tls.key", CAFile: "/c/ca.crt"}
	b, err := schedulerConfig(base, "/k", "x", "https://127.0.0.1:7", tls)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	exts := got["extenders"].([]any)
	for _, e := range exts {
		m := e.(map[string]any)
		if m["urlPrefix"] != "https://127.0.0.1:7" || m["bindVerb"] != "bind" || m["enableHTTPS"] != true {
			t.Errorf("extender = %v", m)
		}
		// The local client certificate replaces the pod's paths.
		if d := cmp.Diff(map[string]any{"certFile": "/c/tls.crt", "keyFile": "/c/tls.key", "caFile": "/c/ca.crt"}, m["tlsConfig"]); d != "" {
			t.Errorf("tlsConfig (-want +got):\n%s", d)
		}
	}
	if got["leaderElection"].(map[string]any)["leaderElect"] != false {
		t.Error("leader election must be off locally")
	}
}
