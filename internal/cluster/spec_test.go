package cluster

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mlplane/mlplane/internal/api"
)

func TestParseNodeSpec(t *testing.T) {
	tests := []struct {
		spec    string
		want    []NodeGroup
		wantErr string
	}{
		{spec: "4x8x80Gi", want: []NodeGroup{{Count: 4, GPUs: 8, MemoryMiB: 81920}}},
		{spec: "2x8x80Gi, 2x4x40Gi", want: []NodeGroup{{2, 8, 81920}, {2, 4, 40960}}},
		{spec: "1x1x24576Mi", want: []NodeGroup{{1, 1, 24576}}},
		{spec: "", wantErr: "no nodes"},
		{spec: "4x8", wantErr: "want NODESxGPUSxSIZE"},
		{spec: "0x8x80Gi", wantErr: "node count"},
		{spec: "1x0x80Gi", wantErr: "GPU count"},
		{spec: "1x65x80Gi", wantErr: "GPU count"},
		{spec: "1x8xlots", wantErr: "GPU memory"},
		{spec: "1x8x1Ki", wantErr: "GPU memory"},
		{spec: "10001x1x1Gi", wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseNodeSpec(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseNodeSpec(%q) error = %v, want one containing %q", tt.spec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("ParseNodeSpec(%q) (-want +got):\n%s", tt.spec, d)
			}
		})
	}
}

func TestNodeGroupString(t *testing.T) {
	g := NodeGroup{Count: 2, GPUs: 4, MemoryMiB: 49152}
	if got, want := g.String(), "2x4x48Gi"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := (NodeGroup{Count: 1, GPUs: 1, MemoryMiB: 1000}).GPUSpec(), "1x1000Mi"; got != want {
		t.Errorf("GPUSpec() = %q, want %q", got, want)
	}
}

func TestFakeGPUs(t *testing.T) {
	g := NodeGroup{Count: 1, GPUs: 8, MemoryMiB: 81920}
	a := FakeGPUs("gpu-node-0", g)
	if d := cmp.Diff(a, FakeGPUs("gpu-node-0", g)); d != "" {
		t.Fatalf("inventory is not deterministic:\n%s", d)
	}
	// The wire format must accept it: unique UUIDs, sizes set.
	decoded, err := api.DecodeInventory(api.EncodeInventory(a))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := api.HealthyMemoryMiB(decoded), int64(8*81920); got != want {
		t.Errorf("HealthyMemoryMiB = %d, want %d", got, want)
	}
	uuid := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	for _, gpu := range a {
		if !uuid.MatchString(gpu.UUID) {
			t.Errorf("UUID %q is not in NVIDIA's form", gpu.UUID)
		}
	}
	if FakeGPUs("gpu-node-1", g)[0].UUID == a[0].UUID {
		t.Error("two nodes share a GPU UUID")
	}
}

// TestFakeUUIDMatchesAgent pins FakeUUID to the value internal/gpu's fake
// backend gives (gpu.FakeUUID("gpu-node-0", 3)), so that the in-process
// publisher and a real node agent agree.
func TestFakeUUIDMatchesAgent(t *testing.T) {
	if got, want := FakeUUID("gpu-node-0", 3), fakeUUIDFromAgent; got != want {
		t.Errorf("FakeUUID = %s, want %s", got, want)
	}
}

const fakeUUIDFromAgent = "GPU-e98d116f-e580-0197-889b-f371038b69f7"
