package mutate

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

func windowsPod(ann map[string]string) *corev1.Pod {
	p := testPod(ann)
	p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
	return p
}

// TestWindowsDenied: a Windows pod that asks for the loader, GPU wiring or a
// template with Linux-only securityContext fields is denied, each reason in
// the same denial.
func TestWindowsDenied(t *testing.T) {
	m := psaConfig(t) // template dcgm sets privileged
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want []string
	}{
		{"loader", map[string]string{api.AnnotationModelURI: "s3://bucket/m"}, []string{
			`annotation mlplane.io/model-uri: mlplane's model loader runs on Linux only: pod spec.os.name is windows; a pvc:// model needs no loader`}},
		{"gpu", map[string]string{api.AnnotationGPUMemory: "8Gi"}, []string{
			`annotation mlplane.io/gpu-memory: mlplane's GPU wiring (the NVIDIA container runtime) runs on Linux only: pod spec.os.name is windows`}},
		{"template", map[string]string{api.AnnotationTemplates: "metrics,dcgm"}, []string{
			`annotation mlplane.io/templates: template "dcgm": container "dcgm-exporter" sets securityContext.privileged, which is Linux-only: pod spec.os.name is windows`}},
		{"all at once", map[string]string{api.AnnotationModelURI: "hf://org/model", api.AnnotationGPUMemory: "8Gi"}, []string{
			`annotation mlplane.io/model-uri: mlplane's model loader runs on Linux only: pod spec.os.name is windows; a pvc:// model needs no loader`,
			`annotation mlplane.io/gpu-memory: mlplane's GPU wiring (the NVIDIA container runtime) runs on Linux only: pod spec.os.name is windows`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := m.Mutate(windowsPod(tc.ann), enabled)
			if err == nil || err.Error() != strings.Join(tc.want, "\n") {
				t.Fatalf("error = %v\nwant %s", err, strings.Join(tc.want, "\n"))
			}
			if len(res.Patch) != 0 {
				t.Fatal("a denied pod got a patch")
			}
		})
	}
}

// TestWindowsAllowed: a Windows pod that asks for nothing Linux-only is
// mutated as any other (profile defaults, the status annotation), a pvc://
// model is mounted, and no injected container gets a Linux-only field.
func TestWindowsAllowed(t *testing.T) {
	m := testMutator(t)
	for _, ann := range []map[string]string{
		nil,
		{api.AnnotationModelURI: "pvc://models/llama", api.AnnotationTemplates: "metrics"},
	} {
		in := windowsPod(ann)
		res, err := m.Mutate(in, enabled)
		if err != nil {
			t.Fatalf("%v: %v", ann, err)
		}
		out, err := Apply(in, res.Patch)
		if err != nil {
			t.Fatal(err)
		}
		checkPod(t, out)
		if out.Spec.Containers[0].SecurityContext != nil || out.Spec.OS.Name != corev1.Windows {
			t.Errorf("%v: the serving container or spec.os changed: %+v", ann, out.Spec)
		}
	}
}
