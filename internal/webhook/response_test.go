package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlplane/mlplane/internal/mutate"
)

// TestHandlerResponseBytes: the handler answers a pod it mutates with the
// bytes encoding/json wrote for the same response: the patch marshalled by
// json.Marshal and the review by json.Encoder.
func TestHandlerResponseBytes(t *testing.T) {
	m, err := mutate.New(nil, mutate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(MutatorFunc(func() *mutate.Mutator { return m }), testNamespaces, HandlerOptions{})
	many := vllmPod()
	for i := range 5 {
		many.Spec.Containers = append(many.Spec.Containers, corev1.Container{Name: fmt.Sprintf("side-%d", i), Image: "img",
			Env: []corev1.EnvVar{{Name: "A", Value: "<b>"}}, VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}})
	}
	many.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "img"}}
	many.Spec.Volumes = []corev1.Volume{{Name: "v"}}
	for _, pod := range []*corev1.Pod{vllmPod(), many} {
		body := review(t, pod, admissionv1.Create)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)

		res, err := m.Mutate(pod.DeepCopy(), mutate.Namespace{Name: pod.Namespace, Labels: testNamespaces[pod.Namespace]})
		if err != nil || len(res.Patch) == 0 {
			t.Fatalf("mutate: %v, %d ops", err, len(res.Patch))
		}
		patch, err := json.Marshal(res.Patch)
		if err != nil {
			t.Fatal(err)
		}
		pt := admissionv1.PatchTypeJSONPatch
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(&admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Response: &admissionv1.AdmissionResponse{UID: "0f6d5e2c-1111-4c3a-9a57-5d1f1b8c0b11", Allowed: true,
				Patch: patch, PatchType: &pt, Warnings: res.Warnings},
		}); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusOK || rec.Body.String() != want.String() {
			t.Errorf("HTTP %d\n%s\nwant\n%s", rec.Code, rec.Body, want.Bytes())
		}
	}
}
