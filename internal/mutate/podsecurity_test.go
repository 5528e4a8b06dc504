package mutate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"

	"github.com/mlplane/mlplane/internal/api"
)

// TestPodSecurityKept: for every golden case, each mutated pod passes the
// strictest Pod Security level its input passes, as the Pod Security
// library judges it, or the webhook warned that it does not.
func TestPodSecurityKept(t *testing.T) {
	levels := map[psaapi.Level]int{}
	for _, name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			out, warnings := inject(t, caseMutator(t, name), in)
			before, after := readPods(t, in), readPods(t, []byte(out))
			if len(before) != len(after) {
				t.Fatalf("%d pods in, %d out", len(before), len(after))
			}
			for i := range before {
				want := PodSecurityLevel(&before[i].ObjectMeta, &before[i].Spec)
				// Split by level, each check runs once; the level is the one
				// the whole evaluator gives.
				for _, p := range []*corev1.Pod{before[i], after[i]} {
					if got, ref := PodSecurityLevel(&p.ObjectMeta, &p.Spec), levelByWholeEvaluator(&p.ObjectMeta, &p.Spec); got != ref {
						t.Errorf("pod %d (%s): PodSecurityLevel %s, the whole evaluator %s", i, p.Name, got, ref)
					}
				}
				levels[want]++
				lv := psaapi.LevelVersion{Level: want, Version: latest}
				if passes(lv, &after[i].ObjectMeta, &after[i].Spec) {
					continue
				}
				warned := slices.ContainsFunc(warnings, func(w string) bool {
					return strings.Contains(w, `the pod passes Pod Security "`+lv.String()+`"`)
				})
				if !warned {
					t.Errorf("pod %d passes %s before the mutation, not after, and there is no warning: %v", i, lv, warnings)
				}
			}
		})
	}
	for _, l := range []psaapi.Level{psaapi.LevelRestricted, psaapi.LevelBaseline, psaapi.LevelPrivileged} {
		if levels[l] == 0 {
			t.Errorf("no golden input at level %s", l)
		}
	}
}

// levelByWholeEvaluator is the strictest level a pod passes, by the
// library's evaluator of all checks, restricted first.
func levelByWholeEvaluator(meta *metav1.ObjectMeta, spec *corev1.PodSpec) psaapi.Level {
	for _, l := range []psaapi.Level{psaapi.LevelRestricted, psaapi.LevelBaseline} {
		if passes(psaapi.LevelVersion{Level: l, Version: latest}, meta, spec) {
			return l
		}
	}
	return psaapi.LevelPrivileged
}

// psaConfig is testdata/config.yaml with two more templates that no
// securityContext can make pass baseline.
func psaConfig(t *testing.T) *Mutator {
	t.Helper()
	cfg, err := os.ReadFile("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return mutatorOf(t, append(cfg, []byte(`
- name: dcgm
  container:
    name: dcgm-exporter
    image: nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3
    securityContext: {privileged: true}
- name: netadmin
  container:
    name: net-tuner
    image: ghcr.io/example/net-tuner:v1
    securityContext: {capabilities: {add: [NET_ADMIN]}}
`)...))
}

// restrictedPod passes Pod Security restricted with pod-level fields and
// drop ALL on its container.
func restrictedPod(ann map[string]string) *corev1.Pod {
	p := testPod(ann)
	p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: new(true),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: new(false),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	return p
}

func withEnforce(level string) Namespace {
	return Namespace{Name: "ml", Labels: map[string]string{api.LabelInject: api.NamespaceInjectEnabled, psaapi.EnforceLevelLabel: level}}
}

// TestPodSecurityDenied: what mlplane adds and cannot fit to the pod's
// level is denied where the namespace enforces that level, with the Pod
// Security checks' own words, and warned about elsewhere.
func TestPodSecurityDenied(t *testing.T) {
	m := psaConfig(t)
	cacheM := configMutator(t, "testdata/model-cache.config.yaml")
	for _, tc := range []struct {
		name    string
		m       *Mutator
		pod     *corev1.Pod
		ns      Namespace
		deny    string
		warning string
	}{
		{"privileged template, restricted enforced", m, restrictedPod(map[string]string{api.AnnotationTemplates: "dcgm"}), withEnforce("restricted"),
			`namespace ml enforces Pod Security "restricted:latest", which the pod passes but the containers and volumes mlplane adds do not: privileged (container "dcgm-exporter" must not set securityContext.privileged=true); the InjectionConfig (its templates, loader.securityContext, loader.cache) decides what they ask for`, ""},
		{"privileged template, baseline enforced", m, testPod(map[string]string{api.AnnotationTemplates: "dcgm"}), withEnforce("baseline"),
			`namespace ml enforces Pod Security "baseline:latest", which the pod passes but the containers and volumes mlplane adds do not: privileged (container "dcgm-exporter" must not set securityContext.privileged=true); the InjectionConfig (its templates, loader.securityContext, loader.cache) decides what they ask for`, ""},
		{"capability, restricted pod, baseline enforced", m, restrictedPod(map[string]string{api.AnnotationTemplates: "netadmin"}), withEnforce("baseline"),
			`namespace ml enforces Pod Security "baseline:latest", which the pod passes but the containers and volumes mlplane adds do not: non-default capabilities (container "net-tuner" must not include "NET_ADMIN" in securityContext.capabilities.add); the InjectionConfig (its templates, loader.securityContext, loader.cache) decides what they ask for`, ""},
		{"node cache, baseline enforced", cacheM, testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m"}), withEnforce("baseline"),
			`namespace ml enforces Pod Security "baseline:latest", which the pod passes but the containers and volumes mlplane adds do not: hostPath volumes (volume "mlplane-model-cache"); the InjectionConfig (its templates, loader.securityContext, loader.cache) decides what they ask for`, ""},
		{"privileged template, no enforce label", m, restrictedPod(map[string]string{api.AnnotationTemplates: "dcgm"}), enabled, "",
			`the pod passes Pod Security "restricted:latest", but the containers and volumes mlplane adds do not: privileged (container "dcgm-exporter" must not set securityContext.privileged=true); a namespace that enforces "restricted" rejects it`},
		{"privileged template, privileged enforced", m, testPod(map[string]string{api.AnnotationTemplates: "dcgm"}), withEnforce("privileged"), "",
			`the pod passes Pod Security "baseline:latest", but the containers and volumes mlplane adds do not: privileged (container "dcgm-exporter" must not set securityContext.privileged=true); a namespace that enforces "baseline" rejects it`},
		{"capability, restricted pod, restricted enforced", m, restrictedPod(map[string]string{api.AnnotationTemplates: "netadmin"}), withEnforce("restricted"),
			`namespace ml enforces Pod Security "restricted:latest", which the pod passes but the containers and volumes mlplane adds do not: unrestricted capabilities (container "net-tuner" must not include "NET_ADMIN" in securityContext.capabilities.add); the InjectionConfig (its templates, loader.securityContext, loader.cache) decides what they ask for`, ""},
		// The pod itself fails the enforced level: the API server rejects
		// it whatever mlplane adds, so that is not mlplane's to deny.
		{"pod fails the enforced level", m, testPod(map[string]string{api.AnnotationTemplates: "dcgm"}), withEnforce("restricted"), "",
			`the pod passes Pod Security "baseline:latest", but the containers and volumes mlplane adds do not: privileged (container "dcgm-exporter" must not set securityContext.privileged=true); a namespace that enforces "baseline" rejects it`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.m.Mutate(tc.pod, tc.ns)
			if tc.deny != "" {
				if err == nil || err.Error() != tc.deny {
					t.Fatalf("error = %v\nwant %s", err, tc.deny)
				}
				if len(res.Patch) != 0 {
					t.Fatalf("a denied pod got a patch")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(res.Warnings, tc.warning) {
				t.Fatalf("warnings %q\nwant %s", res.Warnings, tc.warning)
			}
		})
	}
}

// TestPodSecurityFitted: at restricted, injected containers get the fields
// the level asks for that neither they nor the pod set, and pass; the
// mutated pod is judged by the library at the input's level.
func TestPodSecurityFitted(t *testing.T) {
	custom := mutatorOf(t, []byte(`apiVersion: mlplane.io/v1alpha1
kind: InjectionConfig
loader:
  securityContext: {readOnlyRootFilesystem: true}
templates:
- name: metrics
  container: {name: metrics-exporter, image: img, securityContext: {runAsUser: 1000}}
`))
	for _, tc := range []struct {
		name  string
		m     *Mutator
		pod   func() *corev1.Pod
		level psaapi.Level
		// want are the injected containers' securityContexts by name.
		want map[string]*corev1.SecurityContext
	}{
		{"restricted by the pod level: the loader's default, the sidecar gets the container-level two", custom,
			func() *corev1.Pod {
				return restrictedPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationTemplates: "metrics"})
			},
			psaapi.LevelRestricted, map[string]*corev1.SecurityContext{
				LoaderContainerName: {ReadOnlyRootFilesystem: new(true), AllowPrivilegeEscalation: new(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				"metrics-exporter": {RunAsUser: new(int64(1000)), AllowPrivilegeEscalation: new(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		{"restricted in a user namespace: runAsNonRoot not needed", custom,
			func() *corev1.Pod {
				p := restrictedPod(map[string]string{api.AnnotationTemplates: "metrics"})
				p.Spec.SecurityContext.RunAsNonRoot = nil
				p.Spec.HostUsers = new(false)
				return p
			},
			psaapi.LevelRestricted, map[string]*corev1.SecurityContext{
				"metrics-exporter": {RunAsUser: new(int64(1000)), AllowPrivilegeEscalation: new(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		{"restricted on Windows: only runAsNonRoot", testMutator(t),
			func() *corev1.Pod {
				p := testPod(map[string]string{api.AnnotationTemplates: "metrics"})
				p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
				p.Spec.SecurityContext = &corev1.PodSecurityContext{}
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsNonRoot: new(true)}
				return p
			},
			psaapi.LevelRestricted, map[string]*corev1.SecurityContext{
				"metrics-exporter": {RunAsNonRoot: new(true)},
			}},
		{"baseline: nothing added", custom,
			func() *corev1.Pod {
				return testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationTemplates: "metrics"})
			},
			psaapi.LevelBaseline, map[string]*corev1.SecurityContext{
				LoaderContainerName: {ReadOnlyRootFilesystem: new(true)},
				"metrics-exporter":  {RunAsUser: new(int64(1000))},
			}},
		{"privileged: nothing added", custom,
			func() *corev1.Pod {
				p := testPod(map[string]string{api.AnnotationTemplates: "metrics"})
				p.Spec.HostPID = true
				return p
			},
			psaapi.LevelPrivileged, map[string]*corev1.SecurityContext{
				"metrics-exporter": {RunAsUser: new(int64(1000))},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.pod()
			if got := PodSecurityLevel(&in.ObjectMeta, &in.Spec); got != tc.level {
				t.Fatalf("input level %s, want %s", got, tc.level)
			}
			res, err := tc.m.Mutate(in, enabled)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Apply(in, res.Patch)
			if err != nil {
				t.Fatal(err)
			}
			if !passes(psaapi.LevelVersion{Level: tc.level, Version: latest}, &out.ObjectMeta, &out.Spec) {
				t.Errorf("the mutated pod fails %s", tc.level)
			}
			got := map[string]*corev1.SecurityContext{}
			for _, c := range slices.Concat(out.Spec.InitContainers, out.Spec.Containers) {
				if c.Name != "server" {
					got[c.Name] = c.SecurityContext
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("securityContexts (-want +got):\n%s", d)
			}
		})
	}
	// The config's securityContext is not changed by a mutation.
	if sc := custom.Config().Loader.SecurityContext; sc.AllowPrivilegeEscalation != nil || sc.RunAsNonRoot != nil {
		t.Errorf("the config's loader securityContext was changed: %+v", sc)
	}
}

// TestPodSecurityLevelAsWholeEvaluator: pods where the restricted form of
// a check exempts what its baseline form forbids (Windows pods, for
// capabilities and seccomp) get the level the library's whole evaluator
// gives, not one made from "restricted implies baseline" (found in review:
// such a pod read as privileged).
func TestPodSecurityLevelAsWholeEvaluator(t *testing.T) {
	yes, no := true, false
	windows := func(sc *corev1.SecurityContext) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{
			OS:              &corev1.PodOS{Name: corev1.Windows},
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes},
			Containers:      []corev1.Container{{Name: "app", Image: "app", SecurityContext: sc}},
		}}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want psaapi.Level
	}{
		{"windows, a capability added", windows(&corev1.SecurityContext{AllowPrivilegeEscalation: &no,
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}), psaapi.LevelRestricted},
		{"windows, seccomp unconfined", windows(&corev1.SecurityContext{AllowPrivilegeEscalation: &no,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}), psaapi.LevelRestricted},
		{"linux, a capability added", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app",
			SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}}}}},
			psaapi.LevelPrivileged},
		{"linux, plain", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}, psaapi.LevelBaseline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := levelByWholeEvaluator(&tc.pod.ObjectMeta, &tc.pod.Spec)
			got := PodSecurityLevel(&tc.pod.ObjectMeta, &tc.pod.Spec)
			if ref != tc.want || got != ref {
				t.Errorf("PodSecurityLevel = %s, the whole evaluator %s, want %s", got, ref, tc.want)
			}
		})
	}
}
