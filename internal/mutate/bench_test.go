package mutate

import (
	"os"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// vllmPod is the pod of testdata/vllm-deployment.yaml: a typical vLLM server.
func vllmPod(tb testing.TB) *corev1.Pod {
	data, err := os.ReadFile("testdata/vllm-deployment.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal(data, &d); err != nil {
		tb.Fatal(err)
	}
	return &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
}

func BenchmarkMutate(b *testing.B) {
	m := testMutator(b)
	pod := vllmPod(b)
	b.ReportAllocs()
	for b.Loop() {
		res, err := m.Mutate(pod, enabled)
		if err != nil || len(res.Patch) == 0 {
			b.Fatal(err)
		}
	}
}
