package nvmlgpu

import (
	"errors"
	"testing"

	"github.com/mlplane/mlplane/internal/gpu"
)

// TestOpen opens the machine's real NVML. Without the NVIDIA driver (or
// without cgo) Open must report ErrNoNVML, which the agent turns into a node
// without GPUs, and the rest is skipped: the adapter's logic is tested
// against go-nvml's mocks in mock_test.go. With a driver it must list GPUs.
func TestOpen(t *testing.T) {
	b, err := Open()
	if err != nil {
		if !errors.Is(err, gpu.ErrNoNVML) {
			t.Fatalf("Open() = %v, want an error wrapping gpu.ErrNoNVML", err)
		}
		t.Skipf("no NVML here: %v", err)
	}
	defer b.Close()
	devs, err := b.Devices()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.UUID == "" || d.MemoryMiB <= 0 {
			t.Errorf("GPU %d = %+v", d.Index, d)
		}
	}
}
