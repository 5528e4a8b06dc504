package mutate

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlplane/mlplane/internal/api"
)

var enabled = Namespace{Name: "ml", Labels: map[string]string{api.LabelInject: api.NamespaceInjectEnabled}}

func testPod(ann map[string]string, containers ...string) *corev1.Pod {
	if len(containers) == 0 {
		containers = []string{"server"}
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ml", Annotations: ann}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: "img"})
	}
	return p
}

// TestDenied checks that every bad annotation is denied with a message that
// names the annotation, the value and what is accepted.
func TestDenied(t *testing.T) {
	m := testMutator(t)
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"gpu-memory lots", map[string]string{api.AnnotationGPUMemory: "lots"},
			`annotation mlplane.io/gpu-memory: invalid value "lots": want a positive quantity of memory such as 20Gi or 16384Mi`},
		{"gpu-memory 8Ei", map[string]string{api.AnnotationGPUMemory: "8Ei"},
			`annotation mlplane.io/gpu-memory: invalid value "8Ei": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		{"gpu-memory 9Ei x2", map[string]string{api.AnnotationGPUMemory: "9Ei", api.AnnotationGPUCount: "2"},
			`annotation mlplane.io/gpu-memory: invalid value "9Ei": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		{"gpu-memory 20 digits Gi", map[string]string{api.AnnotationGPUMemory: "99999999999999999999Gi"},
			`annotation mlplane.io/gpu-memory: invalid value "99999999999999999999Gi": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		{"gpu-memory bare number", map[string]string{api.AnnotationGPUMemory: "20480"},
			`annotation mlplane.io/gpu-memory: invalid value "20480": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 20480Mi or 20Gi`},
		{"gpu-count 0", map[string]string{api.AnnotationGPUMemory: "1Gi", api.AnnotationGPUCount: "0"},
			`annotation mlplane.io/gpu-count: invalid value "0": want a whole number from 1 to 64`},
		{"gpu-count -1", map[string]string{api.AnnotationGPUMemory: "1Gi", api.AnnotationGPUCount: "-1"},
			`annotation mlplane.io/gpu-count: invalid value "-1": want a whole number from 1 to 64`},
		{"gpu-count abc", map[string]string{api.AnnotationGPUMemory: "1Gi", api.AnnotationGPUCount: "abc"},
			`annotation mlplane.io/gpu-count: invalid value "abc": want a whole number from 1 to 64`},
		{"unsupported scheme", map[string]string{api.AnnotationModelURI: "ftp://host/model"},
			`annotation mlplane.io/model-uri: invalid value "ftp://host/model": unsupported scheme "ftp"; want s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, hf://ORG/MODEL[@REVISION], https://HOST/PATH, azblob://ACCOUNT/CONTAINER[/PREFIX], oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST) or pvc://CLAIM/PATH`},
		{"plain http", map[string]string{api.AnnotationModelURI: "http://host/model"},
			`annotation mlplane.io/model-uri: invalid value "http://host/model": http:// is refused: https is required; want https://HOST/PATH`},
		{"no scheme", map[string]string{api.AnnotationModelURI: "/models/llama"},
			`annotation mlplane.io/model-uri: invalid value "/models/llama": no scheme; want s3://`},
		{"no bucket", map[string]string{api.AnnotationModelURI: "s3://"},
			`annotation mlplane.io/model-uri: invalid value "s3://": no bucket; want s3://BUCKET/PREFIX`},
		{"oci without registry", map[string]string{api.AnnotationModelURI: "oci://org/model:v1"},
			`annotation mlplane.io/model-uri: invalid value "oci://org/model:v1": "org" is not a registry host`},
		{"bad claim", map[string]string{api.AnnotationModelURI: "pvc://Bad_Claim/x"},
			`annotation mlplane.io/model-uri: invalid value "pvc://Bad_Claim/x": claim name "Bad_Claim" is not a valid PersistentVolumeClaim name; want`},
		{"claim path escapes", map[string]string{api.AnnotationModelURI: "pvc://claim/../other"},
			`annotation mlplane.io/model-uri: invalid value "pvc://claim/../other": the path may not contain ..; want`},
		{"secret in another namespace", map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationModelSecret: "other/secret"},
			`annotation mlplane.io/model-secret: invalid value "other/secret": the Secret must be in the pod's own namespace ml; want a Secret name such as "secret"`},
		{"secret bad name", map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationModelSecret: "Not A Name"},
			`annotation mlplane.io/model-secret: invalid value "Not A Name": want the name of a Secret in namespace ml`},
		{"unknown template", map[string]string{api.AnnotationTemplates: "metrics,tracing"},
			`annotation mlplane.io/templates: invalid value "metrics,tracing": no template "tracing"; want a comma-separated list of metrics, proxy`},
		{"unknown profile", map[string]string{api.AnnotationProfile: "huge"},
			`annotation mlplane.io/profile: invalid value "huge": no such profile; want one of default, gpu`},
		{"unknown container", map[string]string{api.AnnotationContainer: "vllm"},
			`annotation mlplane.io/container: invalid value "vllm": no such container; want one of server`},
		{"bad model name", map[string]string{api.AnnotationModelName: "llama 3"},
			`annotation mlplane.io/model-name: invalid value "llama 3": want a non-empty label value`},
		{"bad model version", map[string]string{api.AnnotationModelVersion: "-v1"},
			`annotation mlplane.io/model-version: invalid value "-v1": want a non-empty label value`},
		{"count without memory", map[string]string{api.AnnotationGPUCount: "2"},
			`annotation mlplane.io/gpu-count is set without mlplane.io/gpu-memory`},
		{"gpu-model empty entry", map[string]string{api.AnnotationGPUMemory: "1Gi", api.AnnotationGPUModel: "H100,,A100"},
			`annotation mlplane.io/gpu-model: invalid value "H100,,A100": model 2 is empty; want a comma-separated list of at most 16 GPU models such as "H100,A100" (letters, digits, spaces, '-', '_' and '.')`},
		{"gpu-model-avoid odd character", map[string]string{api.AnnotationGPUMemory: "1Gi", api.AnnotationGPUModelAvoid: "L4;rm"},
			`annotation mlplane.io/gpu-model-avoid: invalid value "L4;rm": model 1 ("L4;rm") has a character other than letters, digits, spaces, '-', '_' and '.'; want a comma-separated list of at most 16 GPU models such as "H100,A100" (letters, digits, spaces, '-', '_' and '.')`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := m.Mutate(testPod(tc.ann), enabled)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant prefix %s", err, tc.want)
			}
			if len(res.Patch) != 0 || res.Injected != nil {
				t.Fatalf("a denied pod got a patch: %+v", res)
			}
		})
	}
}

// TestDeniedAllAtOnce: every bad annotation is reported in one denial.
func TestDeniedAllAtOnce(t *testing.T) {
	_, err := testMutator(t).Mutate(testPod(map[string]string{
		api.AnnotationGPUMemory: "lots", api.AnnotationProfile: "huge", api.AnnotationModelURI: "ftp://x/y",
	}), enabled)
	if err == nil {
		t.Fatal("no error")
	}
	for _, key := range []string{api.AnnotationGPUMemory, api.AnnotationProfile, api.AnnotationModelURI} {
		if !strings.Contains(err.Error(), "annotation "+key+":") {
			t.Errorf("error does not mention %s:\n%v", key, err)
		}
	}
}

func TestDeniedConflicts(t *testing.T) {
	m := testMutator(t)
	pod := testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m"})
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/mnt/models/"}}
	_, err := m.Mutate(pod, enabled)
	if want := `annotation mlplane.io/model-uri: container "server" already mounts volume "mine" at /mnt/models`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("mount clash: error = %v, want prefix %s", err, want)
	}

	pod = testPod(map[string]string{api.AnnotationGPUMemory: "20Gi"})
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse("1000")}
	_, err = m.Mutate(pod, enabled)
	if want := `annotation mlplane.io/gpu-memory: container "server" sets resource mlplane.io/gpu-memory=1000, but mlplane.io/gpu-memory=20Gi and mlplane.io/gpu-count=1 need 20480 (MiB)`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("resource clash: error = %v, want prefix %s", err, want)
	}

	// An init container runs on the pod's GPUs before the serving container:
	// it may ask for at most the pod's total, 20Gi x 2 = 40960 MiB.
	pod = testPod(map[string]string{api.AnnotationGPUMemory: "20Gi", api.AnnotationGPUCount: "2"})
	pod.Spec.InitContainers = []corev1.Container{{Name: "warmup", Image: "img",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse("40961")}}}}
	_, err = m.Mutate(pod, enabled)
	if want := `annotation mlplane.io/gpu-memory: init container "warmup" requests resource mlplane.io/gpu-memory=40961, more than the pod's 40960 (MiB: mlplane.io/gpu-memory=20Gi on mlplane.io/gpu-count=2 GPUs); it runs on the pod's GPUs before the serving container, so it may request at most that, or nothing`; err == nil || err.Error() != want {
		t.Errorf("init container above the pod: error = %v, want %s", err, want)
	}
	pod.Spec.InitContainers[0].Resources.Requests[api.ResourceGPUMemory] = resource.MustParse("40960")
	if _, err = m.Mutate(pod, enabled); err != nil {
		t.Errorf("init container at the pod's total: %v", err)
	}

	pod = testPod(map[string]string{api.AnnotationGPUMemory: "20Gi"})
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse("1000")}
	// The same value the annotation asks for is fine and not added twice.
	pod.Spec.Containers[0].Resources.Limits[api.ResourceGPUMemory] = resource.MustParse("20480")
	res, err := m.Mutate(pod, enabled)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Apply(pod, res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	r := out.Spec.Containers[0].Resources
	if got := r.Requests[api.ResourceGPUMemory]; got.Value() != 20480 {
		t.Errorf("request = %s, want 20480", got.String())
	}
}

func TestWarnings(t *testing.T) {
	m := testMutator(t)
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		ns     Namespace
		want   string
		mutate bool
	}{
		{"secret existence", testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationModelSecret: "creds"}), enabled,
			`annotation mlplane.io/model-secret: the webhook does not check that Secret "creds" exists in namespace ml; if it does not, the mlplane-model-loader init container stays in CreateContainerConfigError`, true},
		{"secret same namespace prefix", testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationModelSecret: "ml/creds"}), enabled,
			`Secret "creds" exists in namespace ml`, true},
		{"secret without uri", testPod(map[string]string{api.AnnotationModelSecret: "creds"}), enabled,
			"annotation mlplane.io/model-secret is ignored: the pod has no mlplane.io/model-uri", true},
		{"secret with pvc", testPod(map[string]string{api.AnnotationModelURI: "pvc://c/m", api.AnnotationModelSecret: "creds"}), enabled,
			"annotation mlplane.io/model-secret is ignored: a pvc:// model needs no loader credentials", true},
		{"decimal gpu memory", testPod(map[string]string{api.AnnotationGPUMemory: "1G"}), enabled,
			`annotation mlplane.io/gpu-memory: "1G" is not a whole number of MiB; rounded up to 954Mi`, true},
		{"template twice", testPod(map[string]string{api.AnnotationTemplates: "metrics,metrics"}), enabled,
			`annotation mlplane.io/templates: template "metrics" is listed twice; added once`, true},
		{"odd pod label", func() *corev1.Pod {
			p := testPod(nil)
			p.Labels = map[string]string{api.LabelInject: "yes"}
			return p
		}(), enabled, `label mlplane.io/inject="yes" is ignored: want "true" or "false"`, true},
		{"odd namespace label", testPod(nil), Namespace{Name: "x", Labels: map[string]string{api.LabelInject: "true"}},
			`namespace x has label mlplane.io/inject="true", which does not enable injection: want "enabled"`, false},
		{"custom scheduler replaced", func() *corev1.Pod {
			p := testPod(map[string]string{api.AnnotationGPUMemory: "1Gi"})
			p.Spec.SchedulerName = "volcano"
			return p
		}(), enabled, `spec.schedulerName "volcano" is replaced by "mlplane-scheduler"`, true},
		{"user visible devices replaced", func() *corev1.Pod {
			p := testPod(map[string]string{api.AnnotationGPUMemory: "1Gi"})
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: api.EnvNvidiaVisibleDevices, Value: "all"}}
			return p
		}(), enabled, `container "server": env NVIDIA_VISIBLE_DEVICES is replaced by mlplane's value`, true},
		{"gpu sidecar", func() *corev1.Pod {
			p := testPod(map[string]string{api.AnnotationGPUMemory: "1Gi"})
			p.Spec.InitContainers = []corev1.Container{{Name: "exporter", RestartPolicy: new(corev1.ContainerRestartPolicyAlways),
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{api.ResourceGPUMemory: resource.MustParse("512")}}}}
			return p
		}(), enabled, `sidecar "exporter" requests mlplane.io/gpu-memory itself; a sidecar runs beside the serving container and gets no GPU, only the serving container "server" and init containers should request it`, true},
		{"gpu model without gpu memory", testPod(map[string]string{api.AnnotationGPUModel: "H100"}), enabled,
			"annotation mlplane.io/gpu-model is ignored: the pod has no mlplane.io/gpu-memory", true},
		{"device plugin gpus", func() *corev1.Pod {
			p := testPod(map[string]string{api.AnnotationGPUMemory: "1Gi"})
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}
			return p
		}(), enabled, `container "server" also requests nvidia.com/gpu`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := m.Mutate(tc.pod, tc.ns)
			if err != nil {
				t.Fatal(err)
			}
			if !slicesContain(res.Warnings, tc.want) {
				t.Errorf("warnings %q\nwant one containing %q", res.Warnings, tc.want)
			}
			if got := res.Injected != nil; got != tc.mutate {
				t.Errorf("mutated = %v, want %v", got, tc.mutate)
			}
		})
	}
}

func slicesContain(l []string, sub string) bool {
	for _, s := range l {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func TestSkip(t *testing.T) {
	m := testMutator(t)
	withLabel := func(v string) *corev1.Pod {
		p := testPod(nil)
		p.Labels = map[string]string{api.LabelInject: v}
		return p
	}
	mutated := testPod(map[string]string{api.AnnotationStatus: "{}"})
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		ns   Namespace
		want string
	}{
		{"enabled namespace", testPod(nil), enabled, ""},
		{"pod opts in", withLabel("true"), Namespace{Name: "plain"}, ""},
		{"pod opts out", withLabel("false"), enabled, SkipOptedOut},
		{"neither", testPod(nil), Namespace{Name: "plain"}, SkipNotOptedIn},
		{"kube-system", withLabel("true"), Namespace{Name: "kube-system", Labels: enabled.Labels}, SkipExcludedNamespace},
		{"kube-public", withLabel("true"), Namespace{Name: "kube-public"}, SkipExcludedNamespace},
		{"kube-node-lease", withLabel("true"), Namespace{Name: "kube-node-lease"}, SkipExcludedNamespace},
		{"own namespace", withLabel("true"), Namespace{Name: api.DefaultNamespace}, SkipExcludedNamespace},
		{"node agent namespace", withLabel("true"), Namespace{Name: api.NodeAgentNamespace}, SkipExcludedNamespace},
		{"configured", withLabel("true"), Namespace{Name: "sandbox"}, SkipExcludedNamespace},
		{"already mutated", mutated, enabled, SkipAlreadyMutated},
		{"no containers", &corev1.Pod{}, enabled, SkipNoContainers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := m.Mutate(tc.pod, tc.ns)
			if err != nil {
				t.Fatal(err)
			}
			if res.Skipped != tc.want {
				t.Fatalf("Skipped = %q, want %q", res.Skipped, tc.want)
			}
			if (len(res.Patch) == 0) != (tc.want != "") {
				t.Fatalf("patch %v for skip reason %q", res.Patch, tc.want)
			}
		})
	}
}

// TestGPUIsolation: the serving container's NVIDIA_VISIBLE_DEVICES always
// comes from the gpu-ids annotation (empty, so no GPU, while the extender has
// not written it); every other container of a GPU pod gets "void" unless it
// says otherwise, so no container falls back to the runtime's "all".
func TestGPUIsolation(t *testing.T) {
	m := testMutator(t)
	pod := testPod(map[string]string{api.AnnotationGPUMemory: "10Gi", api.AnnotationTemplates: "proxy"}, "server", "helper", "custom")
	pod.Spec.Containers[2].Env = []corev1.EnvVar{{Name: api.EnvNvidiaVisibleDevices, Value: "none"}}
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "img"}}
	res, err := m.Mutate(pod, enabled)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Apply(pod, res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	env := func(c corev1.Container) *corev1.EnvVar {
		for i := range c.Env {
			if c.Env[i].Name == api.EnvNvidiaVisibleDevices {
				return &c.Env[i]
			}
		}
		return nil
	}
	if e := env(out.Spec.Containers[0]); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.annotations['mlplane.io/gpu-ids']" {
		t.Errorf("serving container: %+v", e)
	}
	for _, c := range append(append([]corev1.Container{}, out.Spec.InitContainers...), out.Spec.Containers[1]) {
		if e := env(c); e == nil || e.Value != VisibleDevicesNone {
			t.Errorf("container %s: NVIDIA_VISIBLE_DEVICES = %+v, want %q", c.Name, e, VisibleDevicesNone)
		}
	}
	if e := env(out.Spec.Containers[2]); e == nil || e.Value != "none" {
		t.Errorf("the user's own value was changed: %+v", e)
	}
	if out.Spec.SchedulerName != api.DefaultSchedulerName {
		t.Errorf("schedulerName = %q", out.Spec.SchedulerName)
	}
}

// TestProfileDefaults shows the arithmetic of the resource-default rule.
func TestProfileDefaults(t *testing.T) {
	q := resource.MustParse
	p := &Profile{
		Requests: corev1.ResourceList{"cpu": q("1"), "memory": q("4Gi")},
		Limits:   corev1.ResourceList{"cpu": q("2"), "memory": q("8Gi"), "ephemeral-storage": q("10Gi")},
	}
	for _, tc := range []struct {
		name               string
		have               corev1.ResourceRequirements
		wantReqs, wantLims corev1.ResourceList
	}{
		{"empty: all of the profile", corev1.ResourceRequirements{},
			corev1.ResourceList{"cpu": q("1"), "memory": q("4Gi")},
			corev1.ResourceList{"cpu": q("2"), "memory": q("8Gi"), "ephemeral-storage": q("10Gi")}},
		// memory limit 2Gi < profile request 4Gi: request = 2Gi.
		{"user limit below profile request", corev1.ResourceRequirements{Limits: corev1.ResourceList{"memory": q("2Gi")}},
			corev1.ResourceList{"cpu": q("1"), "memory": q("2Gi")},
			corev1.ResourceList{"cpu": q("2"), "ephemeral-storage": q("10Gi")}},
		// cpu request 3 > profile limit 2: limit = 3.
		{"user request above profile limit", corev1.ResourceRequirements{Requests: corev1.ResourceList{"cpu": q("3")}},
			corev1.ResourceList{"memory": q("4Gi")},
			corev1.ResourceList{"cpu": q("3"), "memory": q("8Gi"), "ephemeral-storage": q("10Gi")}},
		{"everything set: nothing", corev1.ResourceRequirements{
			Requests: corev1.ResourceList{"cpu": q("100m"), "memory": q("1Gi"), "ephemeral-storage": q("1Gi")},
			Limits:   corev1.ResourceList{"cpu": q("100m"), "memory": q("1Gi"), "ephemeral-storage": q("1Gi")}},
			nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs, lims := profileDefaults(&tc.have, p, nil, nil, nil)
			if d := cmp.Diff(tc.wantReqs, toList(nil, reqs)); d != "" {
				t.Errorf("requests (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantLims, toList(nil, lims)); d != "" {
				t.Errorf("limits (-want +got):\n%s", d)
			}
		})
	}
}

// TestPatchOnlyAddsAndReplaces guards what reinvocation relies on: no
// removal, and a status annotation that decodes.
func TestPatchOnlyAddsAndReplaces(t *testing.T) {
	m := testMutator(t)
	pod := testPod(map[string]string{api.AnnotationModelURI: "hf://org/model", api.AnnotationGPUMemory: "8Gi", api.AnnotationTemplates: "metrics,proxy"})
	res, err := m.Mutate(pod, enabled)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range res.Patch {
		if op.Op != "add" && op.Op != "replace" {
			t.Errorf("op %s %s", op.Op, op.Path)
		}
	}
	out, err := Apply(pod, res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.Unmarshal([]byte(out.Annotations[api.AnnotationStatus]), &st); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(*res.Injected, st); d != "" {
		t.Errorf("status annotation (-injected +annotation):\n%s", d)
	}
	want := Status{Container: "server", Profile: "default", Loader: LoaderContainerName, ModelVolume: ModelVolumeName,
		GPUMemoryMiB: 8192, GPUCount: 1, Sidecars: []string{"metrics-exporter", "model-proxy"}}
	if d := cmp.Diff(want, st); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	// The secret goes to the loader only.
	for _, c := range append(out.Spec.Containers, out.Spec.InitContainers[1:]...) {
		if len(c.EnvFrom) != 0 {
			t.Errorf("container %s has envFrom", c.Name)
		}
	}
	// The model volume is read-write in the loader, read-only in the server.
	if vm := out.Spec.InitContainers[1].VolumeMounts[0]; vm.ReadOnly || vm.MountPath != api.ModelMountPath {
		t.Errorf("loader mount %+v", vm)
	}
	if vm := out.Spec.Containers[0].VolumeMounts[0]; !vm.ReadOnly || vm.MountPath != api.ModelMountPath {
		t.Errorf("server mount %+v", vm)
	}
	if rp := out.Spec.InitContainers[0].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Errorf("native sidecar restartPolicy %v", rp)
	}
}

// TestInjectedEnvFirst: mlplane's env vars come before the user's entries,
// so the kubelet, which expands $(VAR) only from entries declared earlier,
// resolves a user variable such as VLLM_MODEL=$(MODEL_DIR); a second pass
// changes nothing.
func TestInjectedEnvFirst(t *testing.T) {
	m := testMutator(t)
	pod := testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationGPUMemory: "20Gi"}, "server", "sidecar")
	pod.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "VLLM_MODEL", Value: "$(MODEL_DIR)"},
		{Name: "MEM", Value: "$(MLPLANE_GPU_MEMORY_MIB)Mi"},
		{Name: "SRC", Value: "$(MODEL_URI)"},
		{Name: "DEVICES", Value: "$(NVIDIA_VISIBLE_DEVICES)"},
	}
	pod.Spec.Containers[1].Env = []corev1.EnvVar{{Name: "DEVICES", Value: "$(NVIDIA_VISIBLE_DEVICES)"}}
	out, _ := mutateApply(t, m, pod)
	names := func(env []corev1.EnvVar) []string {
		var n []string
		for _, e := range env {
			n = append(n, e.Name)
		}
		return n
	}
	wantServer := []string{api.EnvModelURI, api.EnvModelDir, api.EnvModelManifest, api.EnvNvidiaVisibleDevices, api.EnvGPUMemoryMiB, "VLLM_MODEL", "MEM", "SRC", "DEVICES"}
	if d := cmp.Diff(wantServer, names(out.Spec.Containers[0].Env)); d != "" {
		t.Errorf("server env (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{api.EnvNvidiaVisibleDevices, "DEVICES"}, names(out.Spec.Containers[1].Env)); d != "" {
		t.Errorf("sidecar env (-want +got):\n%s", d)
	}
	// What the kubelet makes of the values (fieldRefs resolved to "<ref>").
	got := kubeletEnv(out.Spec.Containers[0].Env)
	for name, want := range map[string]string{"VLLM_MODEL": "/mnt/models", "MEM": "20480Mi", "SRC": "s3://bucket/m", "DEVICES": "<ref>"} {
		if got[name] != want {
			t.Errorf("%s expands to %q, want %q", name, got[name], want)
		}
	}
	if got := kubeletEnv(out.Spec.Containers[1].Env)["DEVICES"]; got != "void" {
		t.Errorf("sidecar DEVICES expands to %q, want void", got)
	}
	again, err := m.Mutate(out, enabled)
	if err != nil || len(again.Patch) != 0 {
		t.Fatalf("second pass: %v %v", again.Patch, err)
	}
}

// kubeletEnv resolves env as the kubelet does for $(VAR) references: only to
// entries declared earlier, an unknown reference left as written. A
// valueFrom entry resolves to "<ref>".
func kubeletEnv(env []corev1.EnvVar) map[string]string {
	vals := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)
	for _, e := range env {
		if e.ValueFrom != nil {
			vals[e.Name] = "<ref>"
			continue
		}
		vals[e.Name] = ref.ReplaceAllStringFunc(e.Value, func(s string) string {
			if v, ok := vals[s[2:len(s)-1]]; ok {
				return v
			}
			return s
		})
	}
	return vals
}

// TestUserLabelsKept: a label the pod already has is never changed (in a
// Deployment's selector, a changed label detaches the pod from its
// ReplicaSet, which then creates pods without end); a different value gets
// a warning.
func TestUserLabelsKept(t *testing.T) {
	m := testMutator(t)
	for _, tc := range []struct {
		name   string
		ann    map[string]string
		labels map[string]string
		want   []string
	}{
		{"model name annotation", map[string]string{api.AnnotationModelURI: "s3://bucket/llama", api.AnnotationModelName: "b"},
			map[string]string{api.LabelModel: "a", "app": "x"},
			[]string{`label mlplane.io/model="a" is kept, not set to "b" from annotation mlplane.io/model-name: the webhook never changes a label the pod already has`}},
		{"name from the URI", map[string]string{api.AnnotationModelURI: "hf://meta-llama/Llama-3.1-8B-Instruct"},
			map[string]string{api.LabelModel: "llama"},
			[]string{`label mlplane.io/model="llama" is kept, not set to "Llama-3.1-8B-Instruct" from annotation mlplane.io/model-uri: the webhook never changes a label the pod already has`}},
		{"model version", map[string]string{api.AnnotationModelVersion: "2"},
			map[string]string{api.LabelModelVersion: "1", api.LabelAppVersion: "1"},
			[]string{`label mlplane.io/model-version="1" is kept, not set to "2" from annotation mlplane.io/model-version: the webhook never changes a label the pod already has`}},
		{"same values, no warning", map[string]string{api.AnnotationModelName: "a", api.AnnotationModelVersion: "1"},
			map[string]string{api.LabelModel: "a", api.LabelModelVersion: "1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(tc.ann)
			pod.Labels = tc.labels
			out, res := mutateApply(t, m, pod)
			var warnings []string
			for _, w := range res.Warnings {
				if strings.HasPrefix(w, "label ") {
					warnings = append(warnings, w)
				}
			}
			if d := cmp.Diff(tc.want, warnings); d != "" {
				t.Errorf("label warnings (-want +got):\n%s", d)
			}
			for k, v := range tc.labels {
				if out.Labels[k] != v {
					t.Errorf("label %s = %q, want the pod's own %q", k, out.Labels[k], v)
				}
			}
		})
	}
}
