package score

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
)

func TestParsePolicyDefaults(t *testing.T) {
	p, err := ParsePolicy([]byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(DefaultPolicy(), p); d != "" {
		t.Fatalf("defaults (-want +got):\n%s", d)
	}
	if p.NodeStrategy != Binpack || p.MultiGPU.GPUStrategy != Binpack || *p.Weights.ProtectEmptyGPUs != DefaultProtectEmptyWeight || !*p.AllowPodOverride || *p.CandidateNodes != 1 {
		t.Fatalf("unexpected defaults: %+v", p)
	}
	// multiGPU.gpuStrategy follows gpuStrategy unless set; an explicit 0 weight stays 0.
	p, err = ParsePolicy([]byte(`apiVersion: mlplane.io/v1alpha1
kind: PlacementPolicy
gpuStrategy: spread
weights: {protectEmptyGPUs: 0}
candidateNodes: 0
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.MultiGPU.GPUStrategy != Spread || *p.Weights.ProtectEmptyGPUs != 0 || *p.Weights.Node != DefaultNodeWeight || *p.CandidateNodes != 0 {
		t.Fatalf("got %+v", p)
	}
}

func TestParsePolicyReportsEveryError(t *testing.T) {
	_, err := ParsePolicy([]byte(`apiVersion: mlplane.io/v1
kind: Policy
nodeStrategy: fast
gpuStrategy: random
multiGPU: {gpuStrategy: first, fragmentation: 101}
weights: {node: 0, gpu: 0, protectEmptyGPUs: -1}
candidateNodes: -2
`))
	if err == nil {
		t.Fatal("invalid policy accepted")
	}
	want := []string{
		`apiVersion: Invalid value: "mlplane.io/v1": must be mlplane.io/v1alpha1`,
		`kind: Invalid value: "Policy": must be PlacementPolicy`,
		`nodeStrategy: Unsupported value: "fast": supported values: "binpack", "spread"`,
		`gpuStrategy: Unsupported value: "random": supported values: "binpack", "spread"`,
		`multiGPU.gpuStrategy: Unsupported value: "first": supported values: "binpack", "spread"`,
		`weights.protectEmptyGPUs: Invalid value: -1: must be between 0 and 100`,
		`multiGPU.fragmentation: Invalid value: 101: must be between 0 and 100`,
		`candidateNodes: Invalid value: -2: must be 0 (every node that fits) or more`,
		`weights: Invalid value: "node: 0, gpu: 0": node and gpu weights cannot both be 0`,
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q\ngot: %s", w, msg)
		}
	}
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) || len(agg.Errors()) != len(want) {
		t.Errorf("want %d errors in an aggregate, got %v", len(want), err)
	}
}

func TestParsePolicyRejectsUnknownFields(t *testing.T) {
	_, err := ParsePolicy([]byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\nweights: {nodes: 2}\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "nodes"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestValidateRequiresDefaults(t *testing.T) {
	errs := Validate(&PlacementPolicy{})
	// apiVersion, kind, three strategies, four weights, candidateNodes: ten
	// problems at once.
	if len(errs) != 10 {
		t.Fatalf("got %d errors: %v", len(errs), errs)
	}
}
