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
	got, err := ParseAgentMetrics(f, textFormat)
	if err != nil {
		t.Fatal(err)
	}
	const gi = 1 << 30
	want := map[types.UID]*PodGPU{
		// two GPUs: memory 30Gi+30Gi used, 40Gi+40Gi booked; utilisation max(0.62, 0.71)
		"uid-llm-0": {Namespace: "ml", Name: "llm-0", UID: "uid-llm-0",
			MemoryUsedBytes: 60 * gi, HasMemoryUsed: true, MemoryBookedBytes: 80 * gi, HasMemoryBooked: true,
			Utilization: 0.71, HasUtilization: true},
		"uid-embed-0": {Namespace: "ml", Name: "embed-0", UID: "uid-embed-0",
			MemoryUsedBytes: 5 * gi, HasMemoryUsed: true, MemoryBookedBytes: 10 * gi, HasMemoryBooked: true,
			Utilization: 0.125, HasUtilization: true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// An agent from before the booked and utilisation series: memory used only.
func TestParseAgentMetricsMemoryOnly(t *testing.T) {
	in := `mlplane_gpu_pod_memory_used_bytes{gpu="0",namespace="ml",node="n",pod="p",pod_uid="u",uuid="GPU-a"} 1024
`
	got, err := ParseAgentMetrics(strings.NewReader(in), textFormat)
	if err != nil {
		t.Fatal(err)
	}
	want := map[types.UID]*PodGPU{"u": {Namespace: "ml", Name: "p", UID: "u", MemoryUsedBytes: 1024, HasMemoryUsed: true}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestParseAgentMetricsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"no pod_uid",
			`mlplane_gpu_pod_memory_used_bytes{gpu="0",namespace="ml",pod="p"} 1` + "\n",
			`agent metrics: a mlplane_gpu_pod_memory_used_bytes series lacks one of the labels namespace, pod, pod_uid (has namespace="ml" pod="p" pod_uid="")`},
		{"negative",
			`mlplane_gpu_pod_utilization_ratio{namespace="ml",pod="p",pod_uid="u"} -0.5` + "\n",
			`agent metrics: mlplane_gpu_pod_utilization_ratio of pod ml/p is -0.5, want a finite value of at least 0`},
		{"NaN",
			`mlplane_gpu_pod_memory_booked_bytes{namespace="ml",pod="p",pod_uid="u"} NaN` + "\n",
			`agent metrics: mlplane_gpu_pod_memory_booked_bytes of pod ml/p is NaN, want a finite value of at least 0`},
		{"ratio above 1",
			`mlplane_gpu_pod_utilization_ratio{namespace="ml",pod="p",pod_uid="u"} 1.5` + "\n",
			`agent metrics: mlplane_gpu_pod_utilization_ratio of pod ml/p is 1.5, want a ratio from 0 to 1`},
		{"sum too large",
			`mlplane_gpu_pod_memory_used_bytes{gpu="0",namespace="ml",pod="p",pod_uid="u"} 1e18` + "\n" +
				`mlplane_gpu_pod_memory_used_bytes{gpu="1",namespace="ml",pod="p",pod_uid="u"} 1e18` + "\n",
			`agent metrics: the GPU memory of pod ml/p sums to more than 1152921504606846976 bytes`},
		{"counter",
			"# TYPE mlplane_gpu_pod_memory_used_bytes counter\n" + `mlplane_gpu_pod_memory_used_bytes{namespace="ml",pod="p",pod_uid="u"} 1` + "\n",
			`agent metrics: mlplane_gpu_pod_memory_used_bytes of pod ml/p is not a gauge`},
		{"not the text format",
			"<html>502 Bad Gateway</html>\n",
			`parse agent metrics: text format parsing error in line 1: invalid metric name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAgentMetrics(strings.NewReader(tc.in), textFormat)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error = %v\nwant     %s", err, tc.want)
			}
		})
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
		pods, err := ParseAgentMetrics(strings.NewReader(string(in)), textFormat)
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
