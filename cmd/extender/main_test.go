package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimulateCommand(t *testing.T) {
	dir := t.TempDir()
	svg := filepath.Join(dir, "out.svg")
	var out, errb bytes.Buffer
	code := runSimulate([]string{"--trace", "../../examples/traces/mixed-llm.yaml", "--output", "json", "--svg", svg}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep struct {
		PodsPlaced, GPUsUsed, LowerBoundGPUs, OversubscribedGPUs int
		Baselines                                                map[string]struct{ GPUsUsed int }
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.PodsPlaced == 0 || rep.OversubscribedGPUs != 0 || rep.GPUsUsed < rep.LowerBoundGPUs || len(rep.Baselines) != 2 {
		t.Fatalf("report %+v", rep)
	}
	b, err := os.ReadFile(svg)
	if err != nil || !bytes.HasPrefix(b, []byte("<svg")) {
		t.Fatalf("svg: %v", err)
	}

	policy := filepath.Join(dir, "p.yaml")
	_ = os.WriteFile(policy, []byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\nnodeStrategy: spread\ngpuStrategy: spread\n"), 0o644)
	out.Reset()
	if code := runSimulate([]string{"--trace", "../../examples/traces/small-models.yaml", "--policy", policy}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "spread/spread") {
		t.Fatalf("text output: %.200s", out.String())
	}
}

func TestSimulateErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("nodes: []\npods: [{name: p, count: 0, gpuMemory: 1Gi}]\n"), 0o644)
	huge := filepath.Join(t.TempDir(), "huge.yaml")
	_ = os.WriteFile(huge, []byte("nodes: [{name: n, count: 1, gpus: [{model: H100, memory: 80Gi, count: 1}]}]\npods: [{name: p, count: 1, gpuMemory: 8Ei}]\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--trace is required"},
		{[]string{"--trace", "x", "--output", "yaml"}, `--output "yaml": want json or text`},
		{[]string{"--trace", bad}, "nodes: Required value"},
		{[]string{"--trace", bad}, "pods[0].count: Invalid value: 0"},
		// 8Ei used to overflow into a negative MiB and abort the run.
		{[]string{"--trace", huge}, "extender simulate: trace: pods[0].gpuMemory: Invalid value: \"8Ei\": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU\n"},
	} {
		var out, errb bytes.Buffer
		if code := runSimulate(tc.args, &out, &errb); code != 1 || !strings.Contains(errb.String(), tc.want) || out.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestServeNeedsTLS: the verbs are served over TLS unless plain HTTP is
// asked for by name.
func TestServeNeedsTLS(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "extender: --cert-dir is required: the verbs bind pods with the extender's RBAC and are served only over TLS to the scheduler's client certificate (--insecure-serving for plain HTTP in tests)\n"},
		{[]string{"--cert-dir=/tls", "--insecure-serving"}, "extender: --cert-dir and --insecure-serving exclude each other\n"},
		{[]string{"--cert-dir=/tls", "--client-names= , "}, "extender: --client-names is empty: name the common name of the scheduler's client certificate\n"},
	} {
		var errb bytes.Buffer
		if code := runServe(tc.args, &errb); code != 2 || errb.String() != tc.want {
			t.Errorf("%v: exit %d, stderr %q, want 2, %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
