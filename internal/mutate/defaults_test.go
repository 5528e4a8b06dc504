package mutate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mlplane/mlplane/internal/api"
)

func list(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

// TestAPIServerDefaults: requests from limits and milli rounding, as
// SetDefaults_Pod and SetDefaults_ResourceList do, written as patch
// operations; nothing for a pod that needs none.
func TestAPIServerDefaults(t *testing.T) {
	pod := testPod(nil, "server", "sidecar", "exact")
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{Limits: list("memory", "1Gi")}}}
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: list("cpu", "2", "memory", "8Gi"), Requests: list("cpu", "1")}
	pod.Spec.Containers[1].Resources = corev1.ResourceRequirements{Requests: list("cpu", "0.0001")}
	pod.Spec.Containers[2].Resources = corev1.ResourceRequirements{Limits: list("cpu", "1"), Requests: list("cpu", "500m")}
	pod.Spec.Resources = &corev1.ResourceRequirements{Limits: list("memory", "0.0005")}
	before := pod.DeepCopy()

	out, ops := apiServerDefaults(pod)
	if d := cmp.Diff(before, pod); d != "" {
		t.Fatalf("the input changed (-before +after):\n%s", d)
	}
	var paths []string
	for _, op := range ops {
		paths = append(paths, op.Op+" "+op.Path)
	}
	want := []string{"add /spec/initContainers/0/resources", "add /spec/containers/0/resources", "add /spec/containers/1/resources", "add /spec/resources"}
	if d := cmp.Diff(want, paths); d != "" {
		t.Fatalf("operations (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		name string
		got  corev1.ResourceList
		want string
	}{
		{"init requests", out.Spec.InitContainers[0].Resources.Requests, "memory=1Gi"},
		{"server requests", out.Spec.Containers[0].Resources.Requests, "cpu=1 memory=8Gi"},
		{"sidecar requests", out.Spec.Containers[1].Resources.Requests, "cpu=1m"},
		{"exact requests", out.Spec.Containers[2].Resources.Requests, "cpu=500m"},
		{"pod limits", out.Spec.Resources.Limits, "memory=1m"},
	} {
		if got := listString(tc.got); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	again, ops := apiServerDefaults(out)
	if again != out || len(ops) != 0 {
		t.Errorf("a defaulted pod was defaulted again: %+v", ops)
	}
}

func listString(l corev1.ResourceList) string {
	s := ""
	for _, name := range []corev1.ResourceName{"cpu", "ephemeral-storage", "memory", api.ResourceGPUMemory} {
		if q, ok := l[name]; ok {
			if s != "" {
				s += " "
			}
			s += string(name) + "=" + q.String()
		}
	}
	return s
}

// TestTemplateAsServed is issue 14 kind 7: a container with limits and no
// requests keeps requests = limits (QoS Guaranteed), whether its pod comes
// from the API server (defaulted) or from a template (`webhook inject`).
func TestTemplateAsServed(t *testing.T) {
	m := testMutator(t)
	tmpl := testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m"})
	tmpl.Spec.Containers[0].Resources.Limits = list("cpu", "2", "memory", "8Gi")
	served, _ := apiServerDefaults(tmpl)
	var pods [2]*corev1.Pod
	for i, in := range []*corev1.Pod{tmpl, served} {
		pods[i], _ = mutateApply(t, m, in)
	}
	if d := cmp.Diff(pods[1], pods[0]); d != "" {
		t.Fatalf("offline and served differ (-served +offline):\n%s", d)
	}
	r := pods[0].Spec.Containers[0].Resources
	if got := listString(r.Requests); got != "cpu=2 ephemeral-storage=1Gi memory=8Gi" {
		t.Errorf("requests %s, want the limits for cpu and memory and the profile's ephemeral-storage", got)
	}
}
