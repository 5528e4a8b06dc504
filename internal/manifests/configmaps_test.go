package manifests

import (
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/mutate"
	"github.com/mlplane/mlplane/internal/score"
)

// The ConfigMaps config/ installs are what the webhook and the extender
// load: strict decoding, defaults, validation, exactly as they reload them.
func TestConfigMapsLoad(t *testing.T) {
	root, err := ConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(filepath.Join(root, "default"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(name, key string) []byte {
		t.Helper()
		o := Find(objs, "ConfigMap", "mlplane-system", name)
		if o == nil {
			t.Fatalf("no ConfigMap mlplane-system/%s", name)
		}
		var cm corev1.ConfigMap
		if err := Into(o, &cm); err != nil {
			t.Fatal(err)
		}
		v, ok := cm.Data[key]
		if !ok {
			t.Fatalf("ConfigMap %s has no key %s", name, key)
		}
		return []byte(v)
	}
	cfg, err := mutate.LoadConfig(get("mlplane-injection-config", "config.yaml"))
	if err != nil {
		t.Fatalf("InjectionConfig: %v", err)
	}
	if cfg.SchedulerName == nil || *cfg.SchedulerName != "mlplane-scheduler" {
		t.Errorf("InjectionConfig schedulerName = %v, want mlplane-scheduler", cfg.SchedulerName)
	}
	if _, err := score.ParsePolicy(get("mlplane-placement-policy", "policy.yaml")); err != nil {
		t.Fatalf("PlacementPolicy: %v", err)
	}
}
