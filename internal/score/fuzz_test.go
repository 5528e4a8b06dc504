package score

import "testing"

// FuzzParsePolicy: a policy that parses is valid and builds a Placer.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\nweights: {node: 3}\n"))
	f.Add([]byte("nodeStrategy: spread\nmultiGPU: {fragmentation: 100}\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			return
		}
		if errs := Validate(p); len(errs) != 0 {
			t.Fatalf("parsed policy invalid: %v", errs)
		}
		if _, err := NewPlacer(p); err != nil {
			t.Fatal(err)
		}
	})
}
