package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/gpu"
)

func TestInventoryFake(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"inventory", "--backend", "fake", "--fake-spec", "2x80Gi,1x40Gi", "--node-name", "n1"}, &out, &errOut); err != nil {
		t.Fatal(err, errOut.String())
	}
	inv, err := api.DecodeInventory(out.String())
	if err != nil {
		t.Fatalf("output is not an inventory: %v\n%s", err, out.String())
	}
	if len(inv) != 3 || inv[2].MemoryMiB != 40960 || inv[0].UUID != gpu.FakeUUID("n1", 0) {
		t.Errorf("inventory = %+v", inv)
	}
}

func TestInventoryNVMLAbsent(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"inventory"}, &out, &errOut); err != nil {
		t.Fatalf("inventory without NVML must not fail: %v", err)
	}
	if !strings.Contains(errOut.String(), "no GPUs") {
		t.Skip("NVML present on this machine")
	}
	if strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("output = %q, want []", out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"inventory", "--backend", "tpu"},
		{"inventory", "--backend", "fake"},
		{"inventory", "--backend", "fake", "--fake-spec", "8xbig"},
		{"inventory", "extra"},
	} {
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}

// TestAddressOff: "0" turns the metrics or health server off, as for the
// webhook and the extender; then no metrics endpoint is published either.
func TestAddressOff(t *testing.T) {
	for flag, want := range map[string]string{"0": "", "": "", ":8080": ":8080", "127.0.0.1:9090": "127.0.0.1:9090"} {
		if got := address(flag); got != want {
			t.Errorf("address(%q) = %q, want %q", flag, got, want)
		}
	}
	if got := metricsEndpoint("10.0.0.7", address("0")); got != "" {
		t.Errorf("metrics off: endpoint %q published", got)
	}
}
