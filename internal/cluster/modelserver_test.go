package cluster

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
)

// TestModelServerDeployment decodes the manifest strictly: a valid
// Deployment on the real node, with the annotations a user writes.
func TestModelServerDeployment(t *testing.T) {
	m := ModelServerDeployment{Name: "served", Namespace: "ml", ModelURI: "s3://models/m", ModelSecret: "s3",
		GPUMemory: "4Gi", Image: "ghcr.io/mlplane/examples/model-server:v0.1.0"}.YAML()
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(m), &d); err != nil {
		t.Fatalf("%v\n%s", err, m)
	}
	pod := d.Spec.Template
	if d.Name != "served" || d.Namespace != "ml" || d.Spec.Selector.MatchLabels["app"] != "served" || pod.Labels["app"] != "served" {
		t.Errorf("names and labels: %+v %+v", d.ObjectMeta, d.Spec.Selector)
	}
	for k, want := range map[string]string{api.AnnotationModelURI: "s3://models/m", api.AnnotationModelSecret: "s3", api.AnnotationGPUMemory: "4Gi"} {
		if pod.Annotations[k] != want {
			t.Errorf("annotation %s = %q, want %q", k, pod.Annotations[k], want)
		}
	}
	want := RealNodePod(&corev1.Pod{})
	if pod.Spec.NodeSelector[RealNodeLabel] != "true" || len(pod.Spec.Tolerations) != 1 || pod.Spec.Tolerations[0] != want.Spec.Tolerations[0] {
		t.Errorf("placement: %v %v", pod.Spec.NodeSelector, pod.Spec.Tolerations)
	}
	if c := pod.Spec.Containers; len(c) != 1 || c[0].Image != "ghcr.io/mlplane/examples/model-server:v0.1.0" || c[0].ReadinessProbe == nil {
		t.Errorf("containers: %+v", c)
	}
	noNS := ModelServerDeployment{Name: "x", Image: "i"}.YAML()
	var d2 appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(noNS), &d2); err != nil || d2.Namespace != "" {
		t.Errorf("without a namespace: %v, namespace %q", err, d2.Namespace)
	}
}
