package api

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"
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
		{`[{"uuid":"GPU-a","memoryMiB":1048577}]`, "annotation mlplane.io/gpus: entry 0 (GPU-a) has more memory than one GPU can have (at most 1048576 MiB)"},
		{`[{"uuid":"GPU-a","memoryMiB":81920,"usedMiB":9223372036854775807}]`, "annotation mlplane.io/gpus: entry 0 (GPU-a) has more memory than one GPU can have (at most 1048576 MiB)"},
	} {
		_, err := DecodeInventory(tc.in)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("DecodeInventory(%s) error = %v, want prefix %q", tc.in, err, tc.want)
		}
	}
}

func TestMemoryMiB(t *testing.T) {
	for _, tc := range []struct {
		q       string
		want    int64
		wantErr error
	}{
		{"1", 1, nil},              // a byte rounds up to 1 MiB
		{"1Mi", 1, nil},            // exact
		{"1048577", 2, nil},        // 1 MiB and a byte
		{"1Ti", 1 << 20, nil},      // the bound
		{"1025Gi", 0, ErrTooLarge}, // above it
		{"8Ei", 0, ErrTooLarge},    // 2^63 bytes, beyond int64
		{"0", 0, ErrNotPositive},
		{"-1Mi", 0, ErrNotPositive},
	} {
		got, err := MemoryMiB(resource.MustParse(tc.q))
		if got != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("MemoryMiB(%s) = %d, %v; want %d, %v", tc.q, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseMemoryErrors(t *testing.T) {
	for v, want := range map[string]error{"lots": ErrNotPositive, "0Mi": ErrNotPositive, "20480": ErrBareNumber, "2Ti": ErrTooLarge} {
		if _, err := ParseMemory(v); !errors.Is(err, want) {
			t.Errorf("ParseMemory(%q) = %v, want %v", v, err, want)
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
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "0": want a positive quantity of memory such as 20Gi or 16384Mi`},
		{name: "negative memory", ann: map[string]string{AnnotationGPUMemory: "-1Gi"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "-1Gi": want a positive quantity of memory such as 20Gi or 16384Mi`},
		// The bound itself: 1Ti = 1048576 MiB.
		{name: "1Ti", ann: map[string]string{AnnotationGPUMemory: "1Ti"}, want: GPURequest{MaxGPUMemoryMiB, 1}, ok: true},
		{name: "1Ti x64", ann: map[string]string{AnnotationGPUMemory: "1048576Mi", AnnotationGPUCount: "64"}, want: GPURequest{1 << 20, 64}, ok: true},
		// One byte more than 1Ti would round up to 1048577 MiB.
		{name: "1Ti and a byte", ann: map[string]string{AnnotationGPUMemory: "1099511627.777k"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "1099511627.777k": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		{name: "1025Gi", ann: map[string]string{AnnotationGPUMemory: "1025Gi"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "1025Gi": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		// 8Ei = 2^63 bytes: its MiB round-up overflowed int64 into -8796093022207.
		{name: "8Ei", ann: map[string]string{AnnotationGPUMemory: "8Ei"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "8Ei": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		{name: "9Ei", ann: map[string]string{AnnotationGPUMemory: "9Ei"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "9Ei": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		{name: "20 digits Gi", ann: map[string]string{AnnotationGPUMemory: "99999999999999999999Gi"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "99999999999999999999Gi": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`},
		// A bare number is bytes to Kubernetes, MiB to HAMi and KAI: refused.
		{name: "bare MiB-like", ann: map[string]string{AnnotationGPUMemory: "20480"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "20480": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 20480Mi or 20Gi`},
		{name: "bare not GiB", ann: map[string]string{AnnotationGPUMemory: " 1000 "},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value " 1000 ": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 1000Mi`},
		{name: "bare exponent", ann: map[string]string{AnnotationGPUMemory: "2e10"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "2e10": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write a quantity with a unit such as 20Gi or 16384Mi`},
		{name: "bare huge", ann: map[string]string{AnnotationGPUMemory: "99999999999999999999"},
			wantErr: `annotation mlplane.io/gpu-memory: invalid value "99999999999999999999": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write a quantity with a unit such as 20Gi or 16384Mi`},
		// A decimal suffix is a unit: 20k = 20000 bytes, rounded up to 1 MiB.
		{name: "decimal suffix", ann: map[string]string{AnnotationGPUMemory: "20k"}, want: GPURequest{1, 1}, ok: true},
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
				if ok || got != (GPURequest{}) {
					t.Fatalf("got %+v ok=%v with an error, want nothing", got, ok)
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
