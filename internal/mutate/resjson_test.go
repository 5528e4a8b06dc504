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
	// Quantities as a pod's JSON gives them: some keep their spelling.
	var spelled corev1.ResourceList
	if err := json.Unmarshal([]byte(`{"a":"+1Gi","b":"01","c":"1024Mi","d":"0.5","e":2,"f":"1e3"}`), &spelled); err != nil {
		t.Fatal(err)
	}
	for _, r := range []corev1.ResourceRequirements{
		{Requests: spelled, Limits: spelled},
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

// jsonStrings are strings that encoding/json escapes in every way it can.
var jsonStrings = []string{
	"", "plain", "mlplane.io/status", `a"b\c`, "<script>&amp;</script>", "\x00\x01\x1f\x7f",
	"\b\f\n\r\t", "é ü 漢字 🙂", "\u2028\u2029", "\xff\xfe", "a\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80",
	`annotation mlplane.io/model-secret: the webhook does not check that Secret "hf-token" exists`,
}

// TestAppendJSONString: AppendJSONString writes what json.Marshal does.
func TestAppendJSONString(t *testing.T) {
	for _, s := range jsonStrings {
		checkAppendJSONString(t, s)
	}
}

// FuzzAppendJSONString: for any string, AppendJSONString writes what
// json.Marshal does.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	f.Fuzz(checkAppendJSONString)
}

func checkAppendJSONString(t *testing.T, s string) {
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := AppendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
		t.Errorf("AppendJSONString(%q) = %s, want x%s", s, got, want)
	}
}
