package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestInventoryRoundTrip(t *testing.T) {
	in := []GPU{
		{Index: 0, UUID: "GPU-a", Model: "H100", MemoryMiB: 81920, UsedMiB: 512, Healthy: true},
		{Index: 1, UUID: "GPU-b", Model: "H100", MemoryMiB: 81920, Healthy: false},
	}
	out, err := DecodeInventory(EncodeInventory(in))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, out); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
	if got := EncodeInventory(nil); got != "[]" {
		t.Fatalf("EncodeInventory(nil) = %q, want []", got)
	}
	// Only healthy GPUs count: 81920.
	if got := HealthyMemoryMiB(in); got != 81920 {
		t.Fatalf("HealthyMemoryMiB = %d, want 81920", got)
	}
}

func TestDecodeInventoryErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{`, "annotation mlplane.io/gpus: invalid JSON"},
		{`[{"index":0}]`, "annotation mlplane.io/gpus: entry 0 has no uuid"},
		{`[{"uuid":"GPU-a","memoryMiB":-1}]`, "annotation mlplane.io/gpus: entry 0 (GPU-a) has negative memory"},
		{`[{"uuid":"GPU-a"},{"uuid":"GPU-a"}]`, "annotation mlplane.io/gpus: uuid GPU-a appears twice"},
	} {
		_, err := DecodeInventory(tc.in)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("DecodeInventory(%s) error = %v, want prefix %q", tc.in, err, tc.want)
		}
	}
}

func TestGPUIDs(t *testing.T) {
	if got := ParseGPUIDs(""); got != nil {
		t.Fatalf("ParseGPUIDs(\"\") = %v, want nil", got)
	}
	ids := []string{"GPU-a", "GPU-b"}
	if d := cmp.Diff(ids, ParseGPUIDs(FormatGPUIDs(ids))); d != "" {
		t.Fatal(d)
	}
	if d := cmp.Diff(ids, ParseGPUIDs(" GPU-a, ,GPU-b ")); d != "" {
		t.Fatal(d)
	}
}

func TestGPURequestFromAnnotations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		want    GPURequest
		ok      bool
		wantErr string
	}{
		{name: "none", ann: nil},
		{name: "20Gi default count", ann: map[string]string{AnnotationGPUMemory: "20Gi"}, want: GPURequest{20480, 1}, ok: true},
		{name: "16384Mi x2", ann: map[string]string{AnnotationGPUMemory: "16384Mi", AnnotationGPUCount: "2"}, want: GPURequest{16384, 2}, ok: true},
		// 1G = 10^9 bytes = 953.67 MiB, rounded up to 954.
		{name: "decimal rounds up", ann: map[string]string{AnnotationGPUMemory: "1G"}, want: GPURequest{954, 1}, ok: true},
		{name: "lots", ann: map[string]string{AnnotationGPUMemory: "lots"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "lots": want a positive quantity of memory such as 20Gi or 16384Mi`},
		{name: "zero memory", ann: map[string]string{AnnotationGPUMemory: "0"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "0"`},
		{name: "count 0", ann: map[string]string{AnnotationGPUMemory: "1Gi", AnnotationGPUCount: "0"},
			wantErr: `annotation mlplane.io/gpu-count: invalid value "0": want a whole number from 1 to 64`},
		{name: "count -1", ann: map[string]string{AnnotationGPUMemory: "1Gi", AnnotationGPUCount: "-1"},
			wantErr: `annotation mlplane.io/gpu-count: invalid value "-1"`},
		{name: "count abc", ann: map[string]string{AnnotationGPUMemory: "1Gi", AnnotationGPUCount: "abc"},
			wantErr: `annotation mlplane.io/gpu-count: invalid value "abc"`},
		{name: "count without memory", ann: map[string]string{AnnotationGPUCount: "2"},
			wantErr: "annotation mlplane.io/gpu-count is set without mlplane.io/gpu-memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := GPURequestFromAnnotations(tc.ann)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want prefix %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || ok != tc.ok || got != tc.want {
				t.Fatalf("got %+v ok=%v err=%v, want %+v ok=%v", got, ok, err, tc.want, tc.ok)
			}
		})
	}
	if got := (GPURequest{MemoryMiB: 20480, Count: 2}).TotalMiB(); got != 40960 {
		t.Fatalf("TotalMiB = %d", got)
	}
}
