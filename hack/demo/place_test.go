package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const gib = 1024 // MiB

func replicas(owner string, memGi int64, n int) []placedPod {
	out := make([]placedPod, n)
	for i := range out {
		out[i] = placedPod{Owner: owner, MiB: memGi * gib}
	}
	return out
}

func gpuRow(node string, index int, ps ...[]placedPod) placementRow {
	r := placementRow{Node: node, GPU: index, TotalMiB: 80 * gib}
	for _, p := range ps {
		r.Pods = append(r.Pods, p...)
	}
	return r
}

func TestRenderPlacement(t *testing.T) {
	var many []placedPod
	for i := range 30 {
		many = append(many, placedPod{Owner: fmt.Sprintf("model-%02d", i), MiB: 2 * gib})
	}
	longNode := "ip-10-0-123-45.us-west-2.compute.internal-with-a-long-tail-7"
	longDeploy := strings.Repeat("very-long-deployment-name-", 9) + "end"
	tests := []struct {
		name   string
		perGPU bool
		rows   []placementRow
		// want, when set, is the exact output.
		want string
		// contains are strings the output must hold.
		contains []string
		// absent are strings the output must not hold.
		absent []string
	}{{
		name:   "per GPU, small",
		perGPU: true,
		rows: []placementRow{
			// 2×20 + 18 + 3×4 = 70 of 80: 8.75 cells, rounded to 9
			gpuRow("gpu-node-0", 0, replicas("llama-3-8b", 20, 2), replicas("mistral-7b", 18, 1), replicas("embeddings", 4, 3)),
			// 70 of 80 on each of two GPUs for one two-GPU pod
			gpuRow("gpu-node-0", 1, replicas("llama-3-70b", 70, 1)),
			gpuRow("gpu-node-1", 0, replicas("llama-3-70b", 70, 1)),
			// 3 of 80 = 0.375 cells: one cell, since something is requested
			gpuRow("gpu-node-1", 1, replicas("resnet50", 3, 1)),
			// empty
			gpuRow("gpu-node-1", 2),
		},
		want: `
Placement per GPU (from mlplane.io/gpu-ids, written by the extender):
NODE        GPU  REQ/TOTAL  USAGE       PODS
gpu-node-0  0    70Gi/80Gi  █████████░  l38b 20Gi×2, m7b 18Gi, e 4Gi×3
gpu-node-0  1    70Gi/80Gi  █████████░  l370b 70Gi
gpu-node-1  0    70Gi/80Gi  █████████░  l370b 70Gi
gpu-node-1  1    3Gi/80Gi   █░░░░░░░░░  r50 3Gi
gpu-node-1  2    0Gi/80Gi   ░░░░░░░░░░  -
key: e=embeddings  l370b=llama-3-70b  l38b=llama-3-8b  m7b=mistral-7b  r50=resnet50
`,
	}, {
		name:   "per GPU, many pods on one GPU",
		perGPU: true,
		// 30 pods of 2Gi: 60 of 80 = 7.5 cells, rounded to 8. The PODS
		// column has 100-(10+2+3+2+9+2+10+2) = 60 runes: six entries of
		// "m00 2Gi" (7 runes) with ", +24 more" take 6×7+5×2+10 = 62,
		// five with ", +25 more" 5×7+4×2+10 = 53.
		rows: []placementRow{gpuRow("gpu-node-0", 0, many)},
		want: `
Placement per GPU (from mlplane.io/gpu-ids, written by the extender):
NODE        GPU  REQ/TOTAL  USAGE       PODS
gpu-node-0  0    60Gi/80Gi  ████████░░  m00 2Gi, m01 2Gi, m02 2Gi, m03 2Gi, m04 2Gi, +25 more
key: m00=model-00  m01=model-01  m02=model-02  m03=model-03  m04=model-04
`,
	}, {
		name:   "per GPU, replicas of one Deployment count together",
		perGPU: true,
		rows:   []placementRow{gpuRow("n", 0, replicas("embeddings", 1, 12), replicas("embeddings", 2, 1))},
		contains: []string{
			"e 1Gi×12, e 2Gi\n", // 12Gi before 2Gi
			"key: e=embeddings\n",
		},
		absent: []string{"more"},
	}, {
		name:   "per GPU, long node and Deployment names",
		perGPU: true,
		rows: []placementRow{
			gpuRow(longNode, 0, replicas(longDeploy, 10, 2), replicas(longDeploy+"-2", 10, 1), replicas("short", 10, 1), replicas("a-"+longDeploy, 1, 9)),
			gpuRow(longNode+"0", 1),
		},
		contains: []string{
			// clipped in the middle to 24 runes, keeping both ends
			"\nip-10-0-123-…long-tail-7  0    49Gi/80Gi",
			"\nip-10-0-123-…ong-tail-70  1    0Gi/80Gi ",
			// 20Gi, then 10Gi each by abbreviation, then 9×1Gi elided
			"  vldnv… 10Gi×2, s 10Gi, vldnv…_2 10Gi, +9 more\n",
			// each key entry too long to share a line: wrapped, indented,
			// clipped
			"\nkey: s=short\n",
			"\n     vldnv…=very-long-deployment-name-very-long-deployment-name-very-long-deployment-name-very-long…\n",
			"\n     vldnv…_2=very-long-deployment-name-",
		},
		absent: []string{"a-very"}, // elided pods are not in the key
	}, {
		name:   "per GPU, only empty GPUs",
		perGPU: true,
		rows:   []placementRow{gpuRow("gpu-node-0", 0), gpuRow("gpu-node-0", 1)},
		absent: []string{"key:", "█"},
	}, {
		name:   "per GPU, figures too wide for the bar",
		perGPU: true,
		rows:   []placementRow{{Node: longNode, GPU: 0, TotalMiB: 1<<50 + 1, Pods: []placedPod{{"x", 1<<50 - 1}}}},
		contains: []string{
			"REQ/TOTAL                              PODS\n",
			"1125899906842623Mi/1125899906842625Mi  x 1125899906842623Mi\n",
		},
		absent: []string{"USAGE", "░"},
	}, {
		name: "per node",
		rows: []placementRow{
			// 70×2 + 36 = 176 of 640: 2.75 cells, rounded to 3
			{Node: "gpu-node-0", GPU: 8, TotalMiB: 640 * gib, Pods: append(replicas("llama-3-70b", 140, 1), replicas("qwen-14b", 36, 1)...)},
			{Node: "gpu-node-1", GPU: 8, TotalMiB: 640 * gib},
		},
		want: `
Placement per node (no pod carries mlplane.io/gpu-ids: the extender is not running, so this is the
scheduler's per-node choice):
NODE        GPUS  REQ/ALLOC    USAGE       PODS
gpu-node-0  8     176Gi/640Gi  ███░░░░░░░  l370b 140Gi, q14b 36Gi
gpu-node-1  8     0Gi/640Gi    ░░░░░░░░░░  -
key: l370b=llama-3-70b  q14b=qwen-14b
`,
	}, {
		name: "per node, many pods",
		// The PODS column has 100-(24+2+4+2+10+2+10+2) = 44 runes: four
		// entries with ", +26 more" take 4×7+3×2+10 = 44, a line of
		// exactly 100.
		rows:     []placementRow{{Node: longNode, GPU: 8, TotalMiB: 640 * gib, Pods: many}},
		contains: []string{"  60Gi/640Gi  █░░░░░░░░░  m00 2Gi, m01 2Gi, m02 2Gi, m03 2Gi, +26 more\n"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := renderPlacement(&buf, tc.perGPU, tc.rows); err != nil {
				t.Fatal(err)
			}
			got := buf.String()
			for i, l := range strings.Split(got, "\n") {
				if n := utf8.RuneCountInString(l); n > placementWidth {
					t.Errorf("line %d is %d runes, over %d: %q", i+1, n, placementWidth, l)
				}
				if strings.HasSuffix(l, " ") {
					t.Errorf("line %d ends in a space: %q", i+1, l)
				}
			}
			if tc.want != "" {
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("output (-want +got):\n%s\ngot:\n%s", d, got)
				}
			}
			for _, s := range tc.contains {
				if !strings.Contains(got, s) {
					t.Errorf("output lacks %q:\n%s", s, got)
				}
			}
			for _, s := range tc.absent {
				if strings.Contains(got, s) {
					t.Errorf("output holds %q:\n%s", s, got)
				}
			}
		})
	}
}

func TestAbbreviations(t *testing.T) {
	got := abbreviations([]string{
		"llama-3-8b", "llama-3-70b", "resnet50", "whisper-small", "embeddings",
		"web-search", "qwen2.5-7b", "embeddings", "one-two-three-four-five-six-seven",
	})
	want := map[string]string{
		"llama-3-8b":    "l38b",
		"llama-3-70b":   "l370b",
		"resnet50":      "r50",
		"embeddings":    "e",
		"qwen2.5-7b":    "q257b",
		"web-search":    "ws",   // first of the two "ws" in name order
		"whisper-small": "ws_2", // second
		// ottffss clipped to 6 runes
		"one-two-three-four-five-six-seven": "ottff…",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("abbreviations (-want +got):\n%s", d)
	}
}

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		used, total int64
		want        string
	}{
		{0, 80, "░░░░░░░░░░"},
		{1, 80, "█░░░░░░░░░"},  // 0.125 cells: anything used shows
		{36, 80, "█████░░░░░"}, // 4.5 cells, rounded up
		{79, 80, "█████████░"}, // 9.875 cells: full only when full
		{80, 80, "██████████"},
		{90, 80, "██████████"}, // over-committed
		{0, 0, "░░░░░░░░░░"},
		{1, 0, "██████████"},
	} {
		if got := bar(tc.used, tc.total, 10); got != tc.want {
			t.Errorf("bar(%d, %d) = %s, want %s", tc.used, tc.total, got, tc.want)
		}
	}
}

func TestPodOwner(t *testing.T) {
	rs := []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "llama-3-8b-5d4f8b9c7"}}
	for _, tc := range []struct {
		pod  corev1.Pod
		want string
	}{
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "llama-3-8b-5d4f8b9c7-x2k9p", GenerateName: "llama-3-8b-5d4f8b9c7-", OwnerReferences: rs}}, "llama-3-8b"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, "probe"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job-abcde", GenerateName: "job-"}}, "job-abcde"},
	} {
		if got := podOwner(&tc.pod); got != tc.want {
			t.Errorf("podOwner(%s) = %s, want %s", tc.pod.Name, got, tc.want)
		}
	}
}
