package mutate

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

// Issue 14 kind 8: pods other injectors and controllers work on too.

// TestDefaultContainer: with Istio's proxy first, the container kubectl's
// default-container annotation names serves the model; mlplane's own
// annotation wins; a name that is no container is warned about.
func TestDefaultContainer(t *testing.T) {
	m := testMutator(t)
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		serving string
		warning string
	}{
		{"default-container", map[string]string{api.AnnotationDefaultContainer: "app"}, "app", ""},
		{"mlplane.io/container wins", map[string]string{api.AnnotationDefaultContainer: "app", api.AnnotationContainer: "istio-proxy"}, "istio-proxy", ""},
		{"no such container", map[string]string{api.AnnotationDefaultContainer: "vllm"}, "istio-proxy",
			`annotation kubectl.kubernetes.io/default-container names no container "vllm"; the model is served from the first container, "istio-proxy": set mlplane.io/container to choose another (one of istio-proxy, app)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ann[api.AnnotationModelURI] = "s3://bucket/m"
			tc.ann[api.AnnotationGPUMemory] = "10Gi"
			out, res := mutateApply(t, m, testPod(tc.ann, "istio-proxy", "app"))
			if res.Injected.Container != tc.serving {
				t.Errorf("serving container %q, want %q", res.Injected.Container, tc.serving)
			}
			if got := strings.Join(res.Warnings, "\n"); got != tc.warning {
				t.Errorf("warnings:\n%s\nwant:\n%s", got, tc.warning)
			}
			for _, c := range out.Spec.Containers {
				e := c.Env[envIndex(c.Env, api.EnvNvidiaVisibleDevices)]
				if gpu := e.ValueFrom != nil; gpu != (c.Name == tc.serving) {
					t.Errorf("container %s: %s = %+v", c.Name, api.EnvNvidiaVisibleDevices, e)
				}
			}
		})
	}
}

func envIndex(env []corev1.EnvVar, name string) int {
	for i := range env {
		if env[i].Name == name {
			return i
		}
	}
	return -1
}

// TestReinvoked: a webhook called after mlplane's adds containers to a GPU
// pod; called again, mlplane gives each of them NVIDIA_VISIBLE_DEVICES=void
// (and nothing else), and a third call changes nothing. A non-GPU pod, or
// one whose added container sets the variable, is left alone.
func TestReinvoked(t *testing.T) {
	m := testMutator(t)
	mutated, _ := mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationGPUMemory: "10Gi"}))
	// What a later webhook adds: a proxy (no env), an agent with env, and
	// an init container.
	later := mutated.DeepCopy()
	later.Spec.Containers = append(later.Spec.Containers,
		corev1.Container{Name: "istio-proxy", Image: "proxy"},
		corev1.Container{Name: "agent", Image: "agent", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}},
		corev1.Container{Name: "dcgm", Image: "dcgm", Env: []corev1.EnvVar{{Name: api.EnvNvidiaVisibleDevices, Value: "all"}}})
	later.Spec.InitContainers = append(later.Spec.InitContainers, corev1.Container{Name: "istio-init", Image: "proxy"})

	again, err := m.Mutate(later, enabled)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range again.Patch {
		got = append(got, op.Op+" "+op.Path)
	}
	want := []string{"add /spec/initContainers/1/env", "add /spec/containers/1/env", "add /spec/containers/2/env/0"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("reinvocation patch (-want +got):\n%s", d)
	}
	if again.Skipped != "" || again.Injected == nil || again.Injected.Container != "server" {
		t.Errorf("Skipped %q, Injected %+v", again.Skipped, again.Injected)
	}
	out, err := Apply(later, again.Patch)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(out.Spec.InitContainers, out.Spec.Containers...) {
		if c.Name == "server" || c.Name == "dcgm" {
			continue
		}
		if i := envIndex(c.Env, api.EnvNvidiaVisibleDevices); i < 0 || !cmp.Equal(c.Env[i], visibleDevicesVoid) {
			t.Errorf("container %s: env %+v, want %s=%s", c.Name, c.Env, api.EnvNvidiaVisibleDevices, VisibleDevicesNone)
		}
	}
	if third, err := m.Mutate(out, enabled); err != nil || len(third.Patch) != 0 || third.Skipped != SkipAlreadyMutated {
		t.Errorf("third call: %v %+v", err, third)
	}

	// A non-GPU pod: nothing.
	plainOut, _ := mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m"}))
	plainOut.Spec.Containers = append(plainOut.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxy"})
	if res, err := m.Mutate(plainOut, enabled); err != nil || len(res.Patch) != 0 || res.Skipped != SkipAlreadyMutated {
		t.Errorf("non-GPU pod: %v %+v", err, res)
	}
}

// TestServiceAccountMount: in a served pod, the containers mlplane adds
// mount the API token where the ServiceAccount admission plugin mounted it
// in the others (as it mounts it into a template's containers created
// offline); a pod without it (automount off) gets none.
func TestServiceAccountMount(t *testing.T) {
	m := testMutator(t)
	token := corev1.VolumeMount{Name: "kube-api-access-x7k2q", ReadOnly: true, MountPath: serviceAccountTokenPath}
	pod := testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationTemplates: "metrics,proxy"})
	pod.Spec.Volumes = []corev1.Volume{{Name: token.Name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{token}
	for _, automount := range []bool{true, false} {
		p := pod.DeepCopy()
		if !automount {
			p.Spec.Volumes, p.Spec.Containers[0].VolumeMounts = nil, nil
		}
		out, res := mutateApply(t, m, p)
		for _, name := range append([]string{res.Injected.Loader}, res.Injected.Sidecars...) {
			var mounts []corev1.VolumeMount
			for _, c := range append(out.Spec.InitContainers, out.Spec.Containers...) {
				if c.Name == name {
					mounts = c.VolumeMounts
				}
			}
			has := len(mounts) > 0 && cmp.Equal(mounts[len(mounts)-1], token)
			if has != automount {
				t.Errorf("automount %v: container %s mounts %+v", automount, name, mounts)
			}
		}
	}
}

// TestEphemeral: ephemeral containers added to a running GPU pod mlplane
// mutated (kubectl debug) get NVIDIA_VISIBLE_DEVICES=void unless they set
// it; a pod mlplane did not mutate, or one without GPUs, is left alone.
func TestEphemeral(t *testing.T) {
	m := testMutator(t)
	gpuPod, _ := mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationGPUMemory: "10Gi"}))
	plainPod, _ := mutateApply(t, m, testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m"}))
	debug := []corev1.EphemeralContainer{
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "nvidia/cuda:12.4.1-base-ubuntu22.04"}},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "shell", Image: "busybox", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}}},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "mine", Image: "busybox", Env: []corev1.EnvVar{{Name: api.EnvNvidiaVisibleDevices, Value: "none"}}}},
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want []string
		skip string
	}{
		{"GPU pod", gpuPod, []string{"add /spec/ephemeralContainers/0/env", "add /spec/ephemeralContainers/1/env/0"}, ""},
		{"no GPU", plainPod, nil, SkipAlreadyMutated},
		{"not mutated", testPod(map[string]string{api.AnnotationGPUMemory: "10Gi"}), nil, SkipNotMutated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pod.DeepCopy()
			p.Spec.EphemeralContainers = debug
			res := m.Ephemeral(p, enabled)
			var got []string
			for _, op := range res.Patch {
				got = append(got, op.Op+" "+op.Path)
			}
			if d := cmp.Diff(tc.want, got); d != "" || res.Skipped != tc.skip {
				t.Fatalf("skipped %q (want %q), patch (-want +got):\n%s", res.Skipped, tc.skip, d)
			}
			if len(res.Patch) == 0 {
				return
			}
			out, err := Apply(p, res.Patch)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range out.Spec.EphemeralContainers[:2] {
				if i := envIndex(c.Env, api.EnvNvidiaVisibleDevices); i != 0 || c.Env[0].Value != VisibleDevicesNone {
					t.Errorf("ephemeral container %s: env %+v", c.Name, c.Env)
				}
			}
		})
	}
}
