package manifests

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// The mlplane-scheduler Deployment runs a configuration that fits the rest
// of config/: its profile is the scheduler name the webhook writes, its
// extender is the extender Service on the verbs it serves, and its leader
// election uses the Lease its Role allows (not the default scheduler's).
func TestSchedulerConfiguration(t *testing.T) {
	data := configMapData(t, "default", "mlplane-scheduler-config")
	raw, ok := data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap mlplane-scheduler-config has no config.yaml (the Deployment passes --config=/etc/kubernetes/mlplane-scheduler/config.yaml); keys: %v", keys(data))
	}
	var cfg schedv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict([]byte(raw), &cfg); err != nil {
		t.Fatalf("KubeSchedulerConfiguration: %v", err)
	}
	if !slices.ContainsFunc(cfg.Profiles, func(p schedv1.KubeSchedulerProfile) bool {
		return p.SchedulerName != nil && *p.SchedulerName == api.DefaultSchedulerName
	}) {
		t.Errorf("no profile %s", api.DefaultSchedulerName)
	}
	le := cfg.LeaderElection
	if le.LeaderElect != nil && *le.LeaderElect && (le.ResourceName != "mlplane-scheduler" || le.ResourceNamespace != api.DefaultNamespace) {
		t.Errorf("leader election on Lease %s/%s; want %s/mlplane-scheduler (its Role's Lease, not the default scheduler's)", le.ResourceNamespace, le.ResourceName, api.DefaultNamespace)
	}
	if len(cfg.Extenders) != 1 {
		t.Fatalf("%d extenders, want 1", len(cfg.Extenders))
	}
	e := cfg.Extenders[0]
	if want := "https://mlplane-extender." + api.DefaultNamespace + ".svc:8888"; e.URLPrefix != want {
		t.Errorf("extender urlPrefix %q, want %q (the Service mlplane-extender)", e.URLPrefix, want)
	}
	// TLS with the client certificate the Deployment mounts.
	const dir = "/etc/mlplane-scheduler/extender-client/"
	if tc := e.TLSConfig; !e.EnableHTTPS || tc == nil || tc.Insecure || tc.CertFile != dir+"tls.crt" || tc.KeyFile != dir+"tls.key" || tc.CAFile != dir+"ca.crt" {
		t.Errorf("extender enableHTTPS %v, tlsConfig %+v: want HTTPS with certFile, keyFile and caFile in %s", e.EnableHTTPS, e.TLSConfig, dir)
	}
	d := deployment(t, "default", "mlplane-scheduler")
	if !slices.ContainsFunc(d.Spec.Template.Spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.MountPath+"/" == dir && slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
			return v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == certs.ExtenderClientSecretName
		})
	}) {
		t.Errorf("the mlplane-scheduler does not mount Secret %s at %s", certs.ExtenderClientSecretName, dir)
	}
	if e.FilterVerb == "" || e.PrioritizeVerb == "" || e.BindVerb == "" || !e.NodeCacheCapable || e.Ignorable {
		t.Errorf("extender %+v: want filter, prioritize and bind verbs, nodeCacheCapable, not ignorable", e)
	}
	if !slices.ContainsFunc(e.ManagedResources, func(r schedv1.ExtenderManagedResource) bool { return r.Name == api.ResourceGPUMemory }) {
		t.Errorf("extender does not manage %s", api.ResourceGPUMemory)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
