package custommetrics

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"k8s.io/apimachinery/pkg/types"
)

var textFormat = expfmt.NewFormat(expfmt.TypeTextPlain)

func TestParseAgentMetrics(t *testing.T) {
	f, err := os.Open("testdata/agent.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, skipped, err := ParseAgentMetrics(f, textFormat)
	if err != nil || skipped != nil {
		t.Fatal(err, skipped)
	}
	const gi = 1 << 30
	want := map[types.UID]*PodGPU{
		// two GPUs: memory 30Gi+30Gi used, 40Gi+40Gi booked; utilisation max(0.62, 0.71)
		"uid-llm-0": {UID: "uid-llm-0", MemoryUsedBytes: 60 * gi, HasMemoryUsed: true, MemoryBookedBytes: 80 * gi, HasMemoryBooked: true,
			Utilization: 0.71, HasUtilization: true},
		"uid-embed-0": {UID: "uid-embed-0", MemoryUsedBytes: 5 * gi, HasMemoryUsed: true, MemoryBookedBytes: 10 * gi, HasMemoryBooked: true,
			Utilization: 0.125, HasUtilization: true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// An agent from before the booked and utilisation series: memory used
// only. And a pod the agent has not named yet (empty namespace and pod):
// known by its UID all the same.
func TestParseAgentMetricsPartial(t *testing.T) {
	in := `mlplane_gpu_pod_memory_used_bytes{gpu="0",namespace="ml",node="n",pod="p",pod_uid="u",uuid="GPU-a"} 1024
mlplane_gpu_pod_memory_used_bytes{gpu="1",namespace="",node="n",pod="",pod_uid="new",uuid="GPU-b"} 2048
`
	got, skipped, err := ParseAgentMetrics(strings.NewReader(in), textFormat)
	if err != nil || skipped != nil {
		t.Fatal(err, skipped)
	}
	want := map[types.UID]*PodGPU{
		"u":   {UID: "u", MemoryUsedBytes: 1024, HasMemoryUsed: true},
		"new": {UID: "new", MemoryUsedBytes: 2048, HasMemoryUsed: true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// Series this server cannot use are left out, each with its reason; the
// node's other figures stay.
func TestParseAgentMetricsSkips(t *testing.T) {
	in := `# TYPE mlplane_gpu_pod_memory_used_bytes gauge
mlplane_gpu_pod_memory_used_bytes{gpu="0",namespace="ml",pod="p"} 1
mlplane_gpu_pod_memory_used_bytes{gpu="1",pod_uid="big"} 1e18
mlplane_gpu_pod_memory_used_bytes{gpu="2",pod_uid="big"} 1e18
mlplane_gpu_pod_memory_used_bytes{gpu="0",pod_uid="good"} 4096
# TYPE mlplane_gpu_pod_utilization_ratio gauge
mlplane_gpu_pod_utilization_ratio{gpu="0",pod_uid="good"} -0.5
mlplane_gpu_pod_utilization_ratio{gpu="1",pod_uid="good"} 1.5
mlplane_gpu_pod_utilization_ratio{gpu="2",pod_uid="good"} 0.25
# TYPE mlplane_gpu_pod_memory_booked_bytes counter
mlplane_gpu_pod_memory_booked_bytes{gpu="0",pod_uid="good"} 1
`
	got, skipped, err := ParseAgentMetrics(strings.NewReader(in), textFormat)
	if err != nil {
		t.Fatal(err)
	}
	want := map[types.UID]*PodGPU{
		"big":  {UID: "big", MemoryUsedBytes: 1e18, HasMemoryUsed: true},
		"good": {UID: "good", MemoryUsedBytes: 4096, HasMemoryUsed: true, Utilization: 0.25, HasUtilization: true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	wantSkipped := []string{
		`mlplane_gpu_pod_memory_booked_bytes{pod_uid="good",gpu="0"}: not a gauge`,
		`mlplane_gpu_pod_memory_used_bytes{gpu="0"}: no pod_uid label`,
		`mlplane_gpu_pod_memory_used_bytes{pod_uid="big",gpu="2"}: the pod's sum exceeds 1152921504606846976 bytes`,
		`mlplane_gpu_pod_utilization_ratio{pod_uid="good",gpu="0"}: -0.5, want a finite value of at least 0`,
		`mlplane_gpu_pod_utilization_ratio{pod_uid="good",gpu="1"}: 1.5, want a ratio from 0 to 1`,
	}
	if d := cmp.Diff(wantSkipped, skipped); d != "" {
		t.Errorf("skipped (-want +got):\n%s", d)
	}
}

func TestParseAgentMetricsNotMetrics(t *testing.T) {
	_, _, err := ParseAgentMetrics(strings.NewReader("<html>502 Bad Gateway</html>\n"), textFormat)
	if want := `parse agent metrics: text format parsing error in line 1: invalid metric name`; err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant     %s", err, want)
	}
}

// FuzzParseAgentMetrics: whatever an agent (or anything at its address)
// answers, parsing returns figures or an error, never panics, and every
// figure it returns is finite and not negative.
func FuzzParseAgentMetrics(f *testing.F) {
	b, err := os.ReadFile("testdata/agent.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`mlplane_gpu_pod_memory_used_bytes{namespace="a",pod="b",pod_uid="c"} 1e308` + "\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		pods, _, err := ParseAgentMetrics(strings.NewReader(string(in)), textFormat)
		if err != nil {
			return
		}
		for uid, p := range pods {
			if p.UID != uid || p.MemoryUsedBytes < 0 || p.MemoryUsedBytes > maxBytes || p.MemoryBookedBytes < 0 ||
				p.MemoryBookedBytes > maxBytes || p.Utilization < 0 || p.Utilization > 1 {
				t.Fatalf("pod %s: %+v", uid, p)
			}
		}
	})
}
