package extender

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	schedv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
)

// The shipped scheduler configurations call the verbs this package serves,
// for the resource it manages.
func TestSchedulerConfigs(t *testing.T) {
	for _, f := range []string{"config.yaml", "default-scheduler-extender.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "scheduler", f))
		if err != nil {
			t.Fatal(err)
		}
		var cfg schedv1.KubeSchedulerConfiguration
		if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(cfg.Extenders) != 1 {
			t.Fatalf("%s: %d extenders", f, len(cfg.Extenders))
		}
		e := cfg.Extenders[0]
		for verb, path := range map[string]string{e.FilterVerb: PathFilter, e.PrioritizeVerb: PathPrioritize, e.BindVerb: PathBind} {
			if "/"+verb != path {
				t.Errorf("%s: verb %q is not served (want %s)", f, verb, path)
			}
		}
		if !e.NodeCacheCapable || e.Ignorable || len(e.ManagedResources) != 1 || e.ManagedResources[0].Name != api.ResourceGPUMemory || e.ManagedResources[0].IgnoredByScheduler {
			t.Errorf("%s: extender %+v", f, e)
		}
		// The adaptive default packs as well at half the scheduler's CPU
		// (BENCHMARKS.md); in the default scheduler's configuration a
		// value would apply to every pod of the cluster.
		if cfg.PercentageOfNodesToScore != nil {
			t.Errorf("%s: percentageOfNodesToScore %d: leave it to kube-scheduler's adaptive default", f, *cfg.PercentageOfNodesToScore)
		}
	}
}

// The RBAC lets the extender renew the leader Lease it elects with.
func TestRBACLeaderLease(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "rbac", "extender.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var role rbacv1.Role
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil || role.Kind != "Role" {
			continue
		}
		if role.Namespace != api.DefaultNamespace {
			t.Errorf("Role in %s", role.Namespace)
		}
		for _, r := range role.Rules {
			for _, n := range r.ResourceNames {
				if n == LeaseName && len(r.Verbs) == 1 && r.Verbs[0] == "update" {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatalf("no Role rule updating Lease %s", LeaseName)
	}
}
