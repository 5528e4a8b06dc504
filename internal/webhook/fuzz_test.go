package webhook

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	kjson "sigs.k8s.io/json"
)

// FuzzReadReview: readReview's one-pass read is only a faster way to the
// pod decodePod gives. For any body without a key twice in one object
// (exactly or in another case), which the API server never writes, and that
// readReview reads in one pass: reading the review case-sensitively with the
// object kept as JSON (as the one pass reads the review's own keys) and
// then decodePod on the object gives the same request fields and pod.
// (Found at once without the filter: "object" and "OBjeCt" both are read
// differently by encoding/json and sigs.k8s.io/json; kept in testdata.)
func FuzzReadReview(f *testing.F) {
	f.Add(review(f, vllmPod(), admissionv1.Create))
	f.Add(review(f, vllmPod(), admissionv1.Update))
	f.Add([]byte(`{"request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml","object":{"spec":{"containers":[{"name":"a","env":[{"name":"X","value":"1"}]}]}}}}`))
	f.Add([]byte(`{"request":{"uid":"1","object":{"metadata":{"labels":{"a":"b"},"Labels":{"c":"d"}},"spec":{"Containers":[{"name":"hidden"}]}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if duplicateKeys(body) {
			return // no API server writes it; the reads may differ
		}
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

// duplicateKeys reports whether some object in body (JSON) has a key twice,
// exactly or in another case (as encoding/json matches keys), or whether
// body is not JSON.
func duplicateKeys(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	var walk func() (bool, error)
	walk = func() (bool, error) {
		tok, err := dec.Token()
		if err != nil {
			return false, err
		}
		switch tok {
		case json.Delim('{'):
			var keys []string
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return false, err
				}
				key, _ := k.(string)
				if slices.ContainsFunc(keys, func(s string) bool { return strings.EqualFold(s, key) }) {
					return true, nil
				}
				keys = append(keys, key)
				if dup, err := walk(); dup || err != nil {
					return dup, err
				}
			}
		case json.Delim('['):
			for dec.More() {
				if dup, err := walk(); dup || err != nil {
					return dup, err
				}
			}
		default:
			return false, nil
		}
		_, err = dec.Token() // the closing delimiter
		return false, err
	}
	dup, err := walk()
	return dup || err != nil
}

func TestDuplicateKeys(t *testing.T) {
	for body, want := range map[string]bool{
		`{"a":1,"b":{"c":[{"d":1},{"d":2}]}}`:   false,
		`{"a":1,"A":2}`:                         true,
		`{"request":{"object":{},"object":{}}}`: true,
		`{"x":[{"k":1,"K":2}]}`:                 true,
		`{"a":`:                                 true, // not JSON
	} {
		if got := duplicateKeys([]byte(body)); got != want {
			t.Errorf("duplicateKeys(%s) = %v, want %v", body, got, want)
		}
	}
}
