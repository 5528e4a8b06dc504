package nvmlgpu

import (
	"errors"
	"testing"

	"github.com/mlplane/mlplane/internal/gpu"
)

// On a machine without the NVIDIA driver, Open reports ErrNoNVML, which the
// agent turns into a node without GPUs. With a driver it must work.
func TestOpen(t *testing.T) {
	b, err := Open()
	if err != nil {
		if !errors.Is(err, gpu.ErrNoNVML) {
			t.Fatalf("Open() = %v, want an error wrapping gpu.ErrNoNVML", err)
		}
		t.Logf("no NVML here: %v", err)
		return
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
