package manifests

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/mutate"
	"github.com/mlplane/mlplane/internal/score"
)

// The ConfigMaps config/ installs are what the webhook and the extender
// load: strict decoding, defaults, validation, exactly as they reload them.
func TestConfigMapsLoad(t *testing.T) {
	get := func(name, key string) []byte {
		t.Helper()
		v, ok := configMapData(t, "default", name)[key]
		if !ok {
			t.Fatalf("ConfigMap %s has no key %s", name, key)
		}
		return []byte(v)
	}
	cfg, err := mutate.LoadConfig(get("mlplane-injection-config", "config.yaml"))
	if err != nil {
		t.Fatalf("InjectionConfig: %v", err)
	}
	if cfg.SchedulerName == nil || *cfg.SchedulerName != api.DefaultSchedulerName {
		t.Errorf("InjectionConfig schedulerName = %v, want %s", cfg.SchedulerName, api.DefaultSchedulerName)
	}
	if _, err := score.ParsePolicy(get("mlplane-placement-policy", "policy.yaml")); err != nil {
		t.Fatalf("PlacementPolicy: %v", err)
	}
}

// configMapData renders config/<overlay> and returns the data of the
// ConfigMap mlplane-system/<name>.
func configMapData(t *testing.T, overlay, name string) map[string]string {
	t.Helper()
	o := Find(rendered(t, overlay), "ConfigMap", api.DefaultNamespace, name)
	if o == nil {
		t.Fatalf("config/%s has no ConfigMap %s/%s", overlay, api.DefaultNamespace, name)
	}
	var cm corev1.ConfigMap
	if err := Into(o, &cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data
}
