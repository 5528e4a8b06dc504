package cluster

import (
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
)

// schedulerConfig renders a KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1)
// for one scheduler process: base (a file's content; nil for none) with the
// cluster's client connection, no leader election and raised client rate
// limits. When base has no profiles, one profile named schedulerName is
// added. When extenderURL is set, every extender's urlPrefix points at it,
// and base without extenders gets the mlplane extender (filter, prioritize,
// bind on api.ResourceGPUMemory). With tls set every extender is called
// over HTTPS with its client certificate and CA; without, over plain HTTP.
func schedulerConfig(base []byte, kubeconfig, schedulerName, extenderURL string, tls *SchedulerTLS) ([]byte, error) {
	cfg := map[string]any{}
	if len(base) > 0 {
		if err := yaml.Unmarshal(base, &cfg); err != nil {
			return nil, fmt.Errorf("scheduler configuration: %w", err)
		}
		if kind, _ := cfg["kind"].(string); kind != "KubeSchedulerConfiguration" {
			return nil, fmt.Errorf("scheduler configuration: kind %q, want KubeSchedulerConfiguration", kind)
		}
	}
	cfg["apiVersion"] = "kubescheduler.config.k8s.io/v1"
	cfg["kind"] = "KubeSchedulerConfiguration"
	cfg["clientConnection"] = map[string]any{
		"kubeconfig": kubeconfig,
		"qps":        controlPlaneQPS,
		"burst":      controlPlaneBurst,
	}
	cfg["leaderElection"] = map[string]any{"leaderElect": false}
	if profiles, _ := cfg["profiles"].([]any); len(profiles) == 0 {
		cfg["profiles"] = []any{map[string]any{"schedulerName": schedulerName}}
	}
	if extenderURL != "" {
		extenders, _ := cfg["extenders"].([]any)
		if len(extenders) == 0 {
			extenders = []any{map[string]any{
				"filterVerb":       "filter",
				"prioritizeVerb":   "prioritize",
				"bindVerb":         "bind",
				"preemptVerb":      "preempt",
				"weight":           1,
				"nodeCacheCapable": true,
				"ignorable":        false,
				"httpTimeout":      "10s", // as config/scheduler/config.yaml: above the extender's 5 s waits
				"managedResources": []any{map[string]any{"name": api.ResourceGPUMemory, "ignoredByScheduler": false}},
			}}
		}
		for i, e := range extenders {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("scheduler configuration: extenders[%d] is not an object", i)
			}
			m["urlPrefix"] = extenderURL
			m["enableHTTPS"] = tls != nil
			delete(m, "tlsConfig")
			if tls != nil {
				m["tlsConfig"] = map[string]any{"certFile": tls.CertFile, "keyFile": tls.KeyFile, "caFile": tls.CAFile}
			}
		}
		cfg["extenders"] = extenders
	}
	return yaml.Marshal(cfg)
}

// SchedulerTLS is the extender tlsConfig of a KubeSchedulerConfiguration:
// the scheduler's client certificate and key, and the CA it verifies the
// extender with, as files.
type SchedulerTLS struct {
	CertFile, KeyFile, CAFile string
}
