package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/benchmarks/<trace>.svg from examples/traces (make svgs)")

// TestDocsSVGs: the pictures in docs/benchmarks/ (shown by docs/extender.md
// and BENCHMARKS.md) are what `extender simulate --svg` draws today for each
// trace in examples/traces with the default policy. `make svgs` rewrites
// them (go test -update); `make bench` writes the same files by the same
// command.
func TestDocsSVGs(t *testing.T) {
	traces, err := filepath.Glob("../../examples/traces/*.yaml")
	if err != nil || len(traces) == 0 {
		t.Fatalf("no traces in examples/traces: %v", err)
	}
	want := map[string]bool{}
	for _, tr := range traces {
		name := strings.TrimSuffix(filepath.Base(tr), ".yaml")
		doc := filepath.Join("../../docs/benchmarks", name+".svg")
		want[filepath.Base(doc)] = true
		got := filepath.Join(t.TempDir(), name+".svg")
		var out, errb bytes.Buffer
		if code := runSimulate([]string{"--trace", tr, "--svg", got}, &out, &errb); code != 0 {
			t.Fatalf("simulate %s: exit %d: %s", tr, code, errb.String())
		}
		b, err := os.ReadFile(got)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(doc, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if old, err := os.ReadFile(doc); err != nil || !bytes.Equal(old, b) {
			t.Errorf("%s is not what simulate draws for %s (%v): run make svgs", doc, tr, err)
		}
	}
	// No picture of a trace that is gone.
	docs, _ := filepath.Glob("../../docs/benchmarks/*.svg")
	for _, d := range docs {
		if !want[filepath.Base(d)] {
			t.Errorf("%s has no trace in examples/traces", d)
		}
	}
}
