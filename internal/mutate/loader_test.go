package mutate

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

// loaderMutator is the Mutator of a minimal config whose loader section is
// the YAML lines given.
func loaderMutator(t *testing.T, loader string) *Mutator {
	t.Helper()
	return mutatorOf(t, []byte("apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\nloader:\n"+loader))
}

func mutateApply(t *testing.T, m *Mutator, pod *corev1.Pod) (*corev1.Pod, Result) {
	t.Helper()
	res, err := m.Mutate(pod, enabled)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Apply(pod, res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

func envOf(c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

// TestPatternsDenied: each malformed pattern list is denied with its exact
// message.
func TestPatternsDenied(t *testing.T) {
	m := testMutator(t)
	const want = `; want a comma-separated list of at most 64 file name patterns such as "*.safetensors,config.json"`
	many := strings.Repeat("*.bin,", 64) + "*.bin"
	for _, tc := range []struct{ key, value, want string }{
		{api.AnnotationModelAllowPatterns, "", `annotation mlplane.io/model-allow-patterns: invalid value "": no pattern` + want},
		{api.AnnotationModelAllowPatterns, "  ", `annotation mlplane.io/model-allow-patterns: invalid value "  ": no pattern` + want},
		{api.AnnotationModelAllowPatterns, "*.json,,*.bin", `annotation mlplane.io/model-allow-patterns: invalid value "*.json,,*.bin": pattern 2 is empty` + want},
		{api.AnnotationModelAllowPatterns, "*.json,", `annotation mlplane.io/model-allow-patterns: invalid value "*.json,": pattern 2 is empty` + want},
		{api.AnnotationModelIgnorePatterns, "original/*, my file.bin", `annotation mlplane.io/model-ignore-patterns: invalid value "original/*, my file.bin": pattern 2 ("my file.bin") contains white space` + want},
		{api.AnnotationModelIgnorePatterns, "a\tb", `annotation mlplane.io/model-ignore-patterns: invalid value "a\tb": pattern 1 ("a\tb") contains white space` + want},
		{api.AnnotationModelIgnorePatterns, many, `annotation mlplane.io/model-ignore-patterns: invalid value "` + many + `": 65 patterns` + want},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			_, err := m.Mutate(testPod(map[string]string{api.AnnotationModelURI: "hf://org/model", tc.key: tc.value}), enabled)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error\n %v\nwant\n %s", err, tc.want)
			}
		})
	}
}

// TestPatterns: the loader gets the patterns without the space around the
// commas; 64 patterns are accepted.
func TestPatterns(t *testing.T) {
	m := testMutator(t)
	many := strings.TrimSuffix(strings.Repeat("*.bin,", 64), ",")
	out, _ := mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "hf://org/model",
		api.AnnotationModelAllowPatterns: " *.safetensors ,config.json,tokenizer/ ", api.AnnotationModelIgnorePatterns: many}))
	env := envOf(&out.Spec.InitContainers[0])
	if got := env[api.EnvLoaderAllowPatterns]; got != "*.safetensors,config.json,tokenizer/" {
		t.Errorf("%s = %q", api.EnvLoaderAllowPatterns, got)
	}
	if got := env[api.EnvLoaderIgnorePatterns]; got != many {
		t.Errorf("%s = %q", api.EnvLoaderIgnorePatterns, got)
	}
	if _, ok := envOf(&out.Spec.Containers[0])[api.EnvLoaderAllowPatterns]; ok {
		t.Error("the serving container got the patterns")
	}
}

// TestLoaderIgnored: the loader's annotations on a pod without a loader are
// ignored, each with its warning.
func TestLoaderIgnored(t *testing.T) {
	m := testMutator(t)
	for _, tc := range []struct {
		uri  string
		want []string
	}{
		{"", []string{
			"annotation mlplane.io/model-secret is ignored: the pod has no mlplane.io/model-uri",
			"annotation mlplane.io/model-allow-patterns is ignored: the pod has no mlplane.io/model-uri",
			"annotation mlplane.io/model-ignore-patterns is ignored: the pod has no mlplane.io/model-uri",
		}},
		{"pvc://claim/llama", []string{
			"annotation mlplane.io/model-secret is ignored: a pvc:// model needs no loader credentials",
			"annotation mlplane.io/model-allow-patterns is ignored: a pvc:// model is mounted whole, without a loader",
			"annotation mlplane.io/model-ignore-patterns is ignored: a pvc:// model is mounted whole, without a loader",
		}},
		{"oci://ghcr.io/org/llama:v1", []string{
			"annotation mlplane.io/model-secret is ignored: an oci:// model is mounted as an image volume, which the kubelet pulls with the pod's imagePullSecrets",
			"annotation mlplane.io/model-allow-patterns is ignored: an oci:// model is mounted whole as an image volume, without a loader",
			"annotation mlplane.io/model-ignore-patterns is ignored: an oci:// model is mounted whole as an image volume, without a loader",
		}},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			ann := map[string]string{api.AnnotationModelSecret: "creds", api.AnnotationModelAllowPatterns: "*.json", api.AnnotationModelIgnorePatterns: "*.bin"}
			if tc.uri != "" {
				ann[api.AnnotationModelURI] = tc.uri
			}
			out, res := mutateApply(t, m, testPod(ann))
			if d := cmp.Diff(tc.want, res.Warnings); d != "" {
				t.Errorf("warnings (-want +got):\n%s", d)
			}
			if len(out.Spec.InitContainers) != 0 {
				t.Errorf("init containers %+v", out.Spec.InitContainers)
			}
		})
	}
}

// TestOCIModes: ImageVolume (the default) mounts the image read-only, with
// no loader and no manifest; Loader runs the loader as for other schemes.
func TestOCIModes(t *testing.T) {
	const uri = "oci://ghcr.io/org/llama:v1"
	pod := testPod(map[string]string{api.AnnotationModelURI: uri})

	out, res := mutateApply(t, testMutator(t), pod)
	want := []corev1.Volume{{Name: ModelVolumeName, VolumeSource: corev1.VolumeSource{
		Image: &corev1.ImageVolumeSource{Reference: "ghcr.io/org/llama:v1", PullPolicy: corev1.PullIfNotPresent}}}}
	if d := cmp.Diff(want, out.Spec.Volumes); d != "" {
		t.Errorf("volumes (-want +got):\n%s", d)
	}
	if len(out.Spec.InitContainers) != 0 || res.Injected.Loader != "" {
		t.Errorf("a loader for an image volume: %+v", out.Spec.InitContainers)
	}
	serving := &out.Spec.Containers[0]
	if d := cmp.Diff([]corev1.VolumeMount{{Name: ModelVolumeName, MountPath: api.ModelMountPath, ReadOnly: true}}, serving.VolumeMounts); d != "" {
		t.Errorf("mounts (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]string{api.EnvModelURI: uri, api.EnvModelDir: api.ModelMountPath}, envOf(serving)); d != "" {
		t.Errorf("env (-want +got):\n%s", d)
	}

	out, res = mutateApply(t, loaderMutator(t, "  ociMode: Loader\n"), pod)
	if len(out.Spec.InitContainers) != 1 || res.Injected.Loader != LoaderContainerName || out.Spec.Volumes[0].EmptyDir == nil {
		t.Fatalf("no loader in ociMode Loader: %+v", out.Spec)
	}
	if got := envOf(&out.Spec.InitContainers[0])[api.EnvModelURI]; got != uri {
		t.Errorf("loader %s = %q", api.EnvModelURI, got)
	}
	if got := envOf(&out.Spec.Containers[0])[api.EnvModelManifest]; got != "/mnt/models/.mlplane-manifest.json" {
		t.Errorf("%s = %q", api.EnvModelManifest, got)
	}
}

// TestNodeCache: the cache is a hostPath volume mounted read-write in the
// loader only; its env follows the config; pods without a loader do not get
// it.
func TestNodeCache(t *testing.T) {
	m := loaderMutator(t, "  volumeSizeLimit: 50Gi\n  cache: {hostPath: /var/lib/mlplane/cache, maxSize: 1Ti}\n")
	out, res := mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/llama"}))
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	if d := cmp.Diff(&corev1.Volume{Name: CacheVolumeName, VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/mlplane/cache", Type: &dirOrCreate}}}, &out.Spec.Volumes[1]); d != "" {
		t.Errorf("cache volume (-want +got):\n%s", d)
	}
	if res.Injected.CacheVolume != CacheVolumeName {
		t.Errorf("status %+v", res.Injected)
	}
	loader := &out.Spec.InitContainers[0]
	if d := cmp.Diff([]corev1.VolumeMount{{Name: ModelVolumeName, MountPath: api.ModelMountPath}, {Name: CacheVolumeName, MountPath: api.ModelCacheMountPath}}, loader.VolumeMounts); d != "" {
		t.Errorf("loader mounts (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]corev1.EnvVar{
		{Name: api.EnvModelURI, Value: "s3://bucket/llama"}, {Name: api.EnvModelDir, Value: api.ModelMountPath},
		{Name: api.EnvLoaderVolumeSize, Value: "50Gi"}, {Name: api.EnvLoaderCacheDir, Value: api.ModelCacheMountPath},
		{Name: api.EnvLoaderCacheMaxSize, Value: "1Ti"},
	}, loader.Env); d != "" {
		t.Errorf("loader env (-want +got):\n%s", d)
	}
	for _, vm := range out.Spec.Containers[0].VolumeMounts {
		if vm.Name == CacheVolumeName {
			t.Error("the serving container mounts the cache")
		}
	}

	out, res = mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "pvc://claim"}))
	if len(out.Spec.Volumes) != 1 || res.Injected.CacheVolume != "" {
		t.Errorf("a cache without a loader: %+v", out.Spec.Volumes)
	}

	// Without maxSize, no MLPLANE_CACHE_MAX_SIZE.
	out, _ = mutateApply(t, loaderMutator(t, "  cache: {hostPath: /cache}\n"), testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/llama"}))
	env := envOf(&out.Spec.InitContainers[0])
	if _, ok := env[api.EnvLoaderCacheMaxSize]; ok || env[api.EnvLoaderCacheDir] != api.ModelCacheMountPath {
		t.Errorf("loader env %v", env)
	}
	if _, ok := env[api.EnvLoaderVolumeSize]; ok {
		t.Errorf("%s without volumeSizeLimit", api.EnvLoaderVolumeSize)
	}
}

// TestManifestEnv: MODEL_MANIFEST is set where a loader writes one, and
// replaced, with a warning, when the user set another value.
func TestManifestEnv(t *testing.T) {
	m := testMutator(t)
	pod := testPod(map[string]string{api.AnnotationModelURI: "gs://bucket/llama"})
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: api.EnvModelManifest, Value: "/elsewhere"}}
	out, res := mutateApply(t, m, pod)
	if got := envOf(&out.Spec.Containers[0])[api.EnvModelManifest]; got != "/mnt/models/.mlplane-manifest.json" {
		t.Errorf("%s = %q", api.EnvModelManifest, got)
	}
	if !slicesContain(res.Warnings, `container "server": env MODEL_MANIFEST is replaced by mlplane's value`) {
		t.Errorf("warnings %q", res.Warnings)
	}
	out, _ = mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "pvc://claim/llama"}))
	if _, ok := envOf(&out.Spec.Containers[0])[api.EnvModelManifest]; ok {
		t.Error("MODEL_MANIFEST for a pvc:// model")
	}
}
