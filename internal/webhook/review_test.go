package webhook

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
)

// reviewSeeds are reviews that readReview must read as the two-step decode
// does: the API server's, and the ones its one pass must leave to the
// two-step decode (onePass false).
func reviewSeeds(t testing.TB) []struct {
	name    string
	body    string
	onePass bool
} {
	pod := string(review(t, vllmPod(), admissionv1.Create))
	req := `{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml",`
	return []struct {
		name    string
		body    string
		onePass bool
	}{
		{"api server", pod, true},
		{"update", string(review(t, vllmPod(), admissionv1.Update)), true},
		{"spaced", `{ "request" : ` + req + ` "object" : {"metadata":{"name":"p"}} } }`, true},
		{"string with an object key", `{"request":` + req + `"object":{"metadata":{"name":"\"object\":"}}}}`, true},
		{"colons in keys and values", `{"request":` + req + `"object":{"metadata":{"labels":{"a:b":"c:d","\":":":\""}}}}}`, false},
		{"colons in values", `{"request":` + req + `"object":{"metadata":{"labels":{"a:b":"c:\":d"}}}}}`, true},
		{"escaped key in the pod", `{"request":` + req + `"object":{"metadata":{"name":"x\\","labels":{"a\\":"\\"}}}}}`, false},
		{"escaped value", `{"request":` + req + `"object":{"metadata":{"name":"x\\","labels":{"a":"\\\""}}}}}`, true},
		{"capitalised request", strings.Replace(pod, `"request"`, `"Request"`, 1), false},
		{"capitalised uid", `{"request":{"UID":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"capitalised kind kind", `{"request":{"uid":"1","kind":{"version":"v1","Kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"kelvin sign", `{"request":{"uid":"1","` + "\u212a" + `ind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"escaped key", `{"request":{"\u0075id":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"object twice", `{"request":` + req + `"object":{"metadata":{"name":"a"}},"object":{"spec":{}}}}`, false},
		{"object in a second request", `{"request":` + req + `"object":{"metadata":{"name":"a"}}},"request":{"object":{"spec":{}}}}`, false},
		{"null object", `{"request":` + req + `"object":null}}`, false},
		{"no object", `{"request":` + req[:len(req)-1] + `}}`, false},
		{"no request", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, false},
		{"object not a pod", `{"request":` + req + `"object":{"spec":{"containers":"nope"}}}}`, false},
		{"deployment", `{"request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{"spec":{"replicas":1,"template":{}}}}}`, true},
		{"deployment not a pod", `{"request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{"spec":{"containers":"nope"}}}}`, false},
		{"malformed", `{"request": {`, false},
		{"wrong field type", `{"request":{"uid":5}}`, false},
	}
}

// TestReadReview: readReview takes the one pass exactly where it may.
func TestReadReview(t *testing.T) {
	for _, tc := range reviewSeeds(t) {
		t.Run(tc.name, func(t *testing.T) {
			checkReadReview(t, []byte(tc.body))
			r, err := readReview([]byte(tc.body))
			if onePass := err == nil && r.Request != nil && r.Request.pod != nil; onePass != tc.onePass {
				t.Errorf("one pass %v, want %v", onePass, tc.onePass)
			}
		})
	}
}

// FuzzReadReview: whatever the input, readReview's one pass reads what the
// two-step decode (encoding/json, then the object with sigs.k8s.io/json)
// reads.
func FuzzReadReview(f *testing.F) {
	for _, tc := range reviewSeeds(f) {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkReadReview(t, data) })
}

func checkReadReview(t *testing.T, data []byte) {
	t.Helper()
	got, err := readReview(data)
	if err != nil || got.Request == nil || got.Request.pod == nil {
		return // the two-step decode itself
	}
	var want reviewIn
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("one pass read %s, which encoding/json refuses: %v", data, err)
	}
	if want.Request == nil {
		t.Fatalf("one pass read a request in %s, encoding/json none", data)
	}
	var pod corev1.Pod
	if err := kjson.UnmarshalCaseSensitivePreserveInts(want.Request.Object, &pod); err != nil {
		t.Fatalf("one pass read a pod in %s, the two-step decode does not: %v", data, err)
	}
	w, g := *want.Request, *got.Request
	w.Object, g.pod = nil, nil
	if got.TypeMeta != want.TypeMeta || !reflect.DeepEqual(g, w) || !reflect.DeepEqual(got.Request.pod, &pod) {
		t.Fatalf("%s:\none pass %+v %+v %+v\ntwo steps %+v %+v %+v", data, got.TypeMeta, g, got.Request.pod, want.TypeMeta, w, &pod)
	}
}
