package gpu

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
)

func TestParseFakeSpec(t *testing.T) {
	for _, tc := range []struct {
		spec string
		// want lists the memory of each GPU in MiB.
		want    []int64
		wantErr string
	}{
		{spec: "8x80Gi", want: []int64{81920, 81920, 81920, 81920, 81920, 81920, 81920, 81920}},
		{spec: "2x80Gi,2x40Gi", want: []int64{81920, 81920, 40960, 40960}},
		{spec: "24Gi", want: []int64{24576}},
		{spec: " 1x16Gi , 1x512Mi ", want: []int64{16384, 512}},
		{spec: "", wantErr: "empty"},
		{spec: "0x80Gi", wantErr: "positive whole number"},
		{spec: "ax80Gi", wantErr: "positive whole number"},
		{spec: "2x80 gigs", wantErr: "not a quantity"},
		{spec: "2x0", wantErr: "positive quantity"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			s, err := ParseFakeSpec(tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseFakeSpec(%q) error = %v, want one containing %q", tc.spec, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, d := range s.Devices("n") {
				got = append(got, d.MemoryMiB)
				if !d.Healthy || d.UsedMiB != 0 {
					t.Errorf("GPU %d = %+v, want healthy and unused", d.Index, d)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("memory per GPU (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFakeSpecYAML(t *testing.T) {
	s, err := ParseFakeSpecYAML([]byte(`
gpus:
- count: 2
  model: NVIDIA H100 80GB HBM3
  memory: 80Gi
  used: 10Gi
  utilization: 35
- memory: 40Gi
  healthy: false
  reason: XID 79
- memory: 24Gi
  processes:
  - {pid: 100, podUID: 0b6c1c9a-1111-2222-3333-444455556666, used: 3Gi}
  - {pid: 101, used: 1Gi}
- memory: 24Gi
  error: nvmlDeviceGetMemoryInfo failed
`))
	if err != nil {
		t.Fatal(err)
	}
	devs := s.Devices("node-a")
	type brief struct {
		Model         string
		Mem, Used     int64
		Util          int
		Healthy       bool
		Reason        string
		NumProcesses  int
		FirstPodUID   string
		FirstProcUsed int64
	}
	var got []brief
	for _, d := range devs {
		b := brief{Model: d.Model, Mem: d.MemoryMiB, Used: d.UsedMiB, Util: d.UtilizationPercent, Healthy: d.Healthy, Reason: d.Reason, NumProcesses: len(d.Processes)}
		if len(d.Processes) > 0 {
			b.FirstPodUID, b.FirstProcUsed = d.Processes[0].PodUID, d.Processes[0].UsedMiB
		}
		got = append(got, b)
	}
	want := []brief{
		{Model: "NVIDIA H100 80GB HBM3", Mem: 81920, Used: 10240, Util: 35, Healthy: true},
		{Model: "NVIDIA H100 80GB HBM3", Mem: 81920, Used: 10240, Util: 35, Healthy: true},
		{Model: "Fake GPU 40Gi", Mem: 40960, Reason: "XID 79"},
		// used defaults to the processes' sum: 3072+1024
		{Model: "Fake GPU 24Gi", Mem: 24576, Used: 4096, Healthy: true, NumProcesses: 2, FirstPodUID: "0b6c1c9a-1111-2222-3333-444455556666", FirstProcUsed: 3072},
		{Model: "Fake GPU 24Gi", Mem: 24576, Reason: "nvmlDeviceGetMemoryInfo failed"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("devices (-want +got):\n%s", diff)
	}
	for i, d := range devs {
		if d.Index != i || d.UUID != FakeUUID("node-a", i) {
			t.Errorf("GPU %d has index %d uuid %s, want %d %s", i, d.Index, d.UUID, i, FakeUUID("node-a", i))
		}
	}
}

func TestParseFakeSpecYAMLRejects(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown field":  {"gpus:\n- memory: 80Gi\n  colour: red\n", "colour"},
		"no memory":      {"gpus:\n- count: 2\n", "gpus[0].memory"},
		"used too large": {"gpus:\n- memory: 8Gi\n  used: 9Gi\n", "gpus[0].used"},
		"utilization":    {"gpus:\n- memory: 8Gi\n  utilization: 120\n", "gpus[0].utilization"},
		// every problem at once
		"several": {"gpus:\n- count: -1\n  memory: 8Gi\n- memory: 0\n", "gpus[1].memory"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseFakeSpecYAML([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestFakeUUID(t *testing.T) {
	re := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for _, node := range []string{"n1", "n2"} {
		for i := range 8 {
			u := FakeUUID(node, i)
			if !re.MatchString(u) {
				t.Errorf("FakeUUID(%q, %d) = %q, not shaped like an NVML UUID", node, i, u)
			}
			if u != FakeUUID(node, i) {
				t.Errorf("FakeUUID(%q, %d) is not deterministic", node, i)
			}
			if seen[u] {
				t.Errorf("FakeUUID(%q, %d) = %q repeats", node, i, u)
			}
			seen[u] = true
		}
	}
}

func TestFakeOverrides(t *testing.T) {
	f, err := NewFake("n1", "2x80Gi", logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	f.SetUsed(1, 5000)
	f.SetHealthy(0, false, "XID 48")
	devs, err := f.Devices()
	if err != nil {
		t.Fatal(err)
	}
	if devs[1].UsedMiB != 5000 || devs[0].UsedMiB != 0 {
		t.Errorf("used = %d, %d; want 0, 5000", devs[0].UsedMiB, devs[1].UsedMiB)
	}
	if devs[0].Healthy || devs[0].Reason != "XID 48" || !devs[1].Healthy {
		t.Errorf("health = %v %q, %v; want false XID 48, true", devs[0].Healthy, devs[0].Reason, devs[1].Healthy)
	}
	f.SetHealthy(0, true, "")
	boom := errors.New("NVML: GPU is lost")
	f.SetError(boom)
	if _, err := f.Devices(); !errors.Is(err, boom) {
		t.Errorf("Devices() error = %v, want %v", err, boom)
	}
	f.SetError(nil)
	if devs, err = f.Devices(); err != nil || !devs[0].Healthy {
		t.Errorf("after clearing the faults: healthy = %v, err = %v", devs[0].Healthy, err)
	}
}

// The e2e suite flips a GPU unhealthy by rewriting the spec file.
func TestFakeFileReloaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpus.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("gpus:\n- count: 2\n  memory: 80Gi\n")
	f, err := NewFake("n1", path, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	healthy := func() []bool {
		t.Helper()
		devs, err := f.Devices()
		if err != nil {
			t.Fatal(err)
		}
		var h []bool
		for _, d := range devs {
			h = append(h, d.Healthy)
		}
		return h
	}
	if diff := cmp.Diff([]bool{true, true}, healthy()); diff != "" {
		t.Fatalf("before (-want +got):\n%s", diff)
	}
	write("gpus:\n- memory: 80Gi\n- memory: 80Gi\n  healthy: false\n")
	if diff := cmp.Diff([]bool{true, false}, healthy()); diff != "" {
		t.Errorf("after rewriting (-want +got):\n%s", diff)
	}
	write("gpus: [ this is not yaml")
	if diff := cmp.Diff([]bool{true, false}, healthy()); diff != "" {
		t.Errorf("a broken file must keep the last good spec (-want +got):\n%s", diff)
	}
	write("error: NVML_ERROR_UNKNOWN\ngpus: []\n")
	if _, err := f.Devices(); err == nil || err.Error() != "NVML_ERROR_UNKNOWN" {
		t.Errorf("spec error: Devices() error = %v, want NVML_ERROR_UNKNOWN", err)
	}
}

func TestNewFakeErrors(t *testing.T) {
	if _, err := NewFake("n1", filepath.Join(t.TempDir(), "missing.yaml"), logr.Discard()); err == nil {
		t.Error("a missing spec file must be an error")
	}
	if _, err := NewFake("n1", "8xlots", logr.Discard()); err == nil {
		t.Error("a bad inline spec must be an error")
	}
}
