package webhook

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	kjson "sigs.k8s.io/json"
)

// FuzzReadReview: readReview's one-pass read is only a faster way to the
// pod decodePod gives. For any body that it reads in one pass, reading the
// review case-sensitively with the object kept as JSON (as the one pass
// reads the review's own keys) and then decodePod on the object succeeds
// too and gives the same request fields and the same pod. (The two-pass
// read of other bodies reads the review's keys in any case, so a review
// with "object" and "OBJECT" both, which the API server never writes, may
// be read differently by the two; the found case is kept in testdata.)
func FuzzReadReview(f *testing.F) {
	f.Add(review(f, vllmPod(), admissionv1.Create))
	f.Add(review(f, vllmPod(), admissionv1.Update))
	f.Add([]byte(`{"request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml","object":{"spec":{"containers":[{"name":"a","env":[{"name":"X","value":"1"}]}]}}}}`))
	f.Add([]byte(`{"request":{"uid":"1","object":{"metadata":{"labels":{"a":"b"},"Labels":{"c":"d"}},"spec":{"Containers":[{"name":"hidden"}]}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		one, err := readReview(body)
		if err != nil || one.Request == nil || one.Request.pod == nil {
			return // read the two-pass way: nothing to compare
		}
		var two reviewIn
		if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &two); err != nil {
			t.Fatalf("read in one pass, but not with the object kept as JSON: %v", err)
		}
		if two.Request == nil {
			t.Fatal("read in one pass, but no request with the object kept as JSON")
		}
		r1, r2 := one.Request, two.Request
		if r1.UID != r2.UID || r1.Kind != r2.Kind || r1.SubResource != r2.SubResource || r1.Namespace != r2.Namespace || r1.Operation != r2.Operation {
			t.Fatalf("request fields differ: one pass %+v, two passes %+v", *r1, *r2)
		}
		pod, err := decodePod(r2.Object)
		if err != nil {
			t.Fatalf("read in one pass, but decodePod fails: %v", err)
		}
		if d := cmp.Diff(pod, r1.pod); d != "" {
			t.Fatalf("pods differ (-two passes +one pass):\n%s", d)
		}
	})
}
