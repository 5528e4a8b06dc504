package mutate

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mlplane/mlplane/internal/api"
)

// TestResourcesValueJSON: the hand-written encoding equals encoding/json's.
func TestResourcesValueJSON(t *testing.T) {
	q := resource.MustParse
	for _, r := range []corev1.ResourceRequirements{
		{},
		{Requests: corev1.ResourceList{"cpu": q("100m"), "memory": q("1Gi"), api.ResourceGPUMemory: *resource.NewQuantity(40960, resource.DecimalSI)}},
		{Limits: corev1.ResourceList{"memory": q("1.5Gi"), "ephemeral-storage": q("1e3"), "cpu": q("0")}},
		{Requests: corev1.ResourceList{"cpu": q("2")}, Limits: corev1.ResourceList{"we\"ird<": q("1")},
			Claims: []corev1.ResourceClaim{{Name: "gpu"}}},
	} {
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal((*resourcesValue)(&r))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}
