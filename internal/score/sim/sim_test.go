package sim

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mlplane/mlplane/internal/score"
)

func loadTrace(t *testing.T, name string) *Trace {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "traces", name))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ParseTrace(data)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestExampleTraces(t *testing.T) {
	for _, tc := range []struct {
		file        string
		arrivalOnly bool
	}{
		{"small-models.yaml", true},
		{"mixed-llm.yaml", true},
		{"mixed-fleet.yaml", false}, // heterogeneous: see the trace's comment
		{"churn.yaml", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rep, err := Simulate(loadTrace(t, tc.file), score.DefaultPolicy())
			if err != nil {
				t.Fatal(err)
			}
			for name, r := range map[string]Result{"policy": rep.Result, BaselineSpread: rep.Baselines[BaselineSpread], BaselineWholeGPU: rep.Baselines[BaselineWholeGPU]} {
				if r.OversubscribedGPUs != 0 {
					t.Errorf("%s: %d oversubscribed GPUs", name, r.OversubscribedGPUs)
				}
				checkCapacity(t, name, &r)
			}
			r := rep.Result
			if r.PodsUnplaced != 0 {
				t.Errorf("%d pods unplaced: %v", r.PodsUnplaced, r.Unplaced)
			}
			if r.GPUsUsed < r.LowerBoundGPUs {
				t.Errorf("used %d GPUs, below the lower bound %d: the bound is wrong", r.GPUsUsed, r.LowerBoundGPUs)
			}
			if tc.arrivalOnly && float64(r.GPUsUsed) > 1.05*float64(r.LowerBoundGPUs) {
				t.Errorf("used %d GPUs, more than 5%% above the lower bound %d", r.GPUsUsed, r.LowerBoundGPUs)
			}
			if w := rep.Baselines[BaselineWholeGPU]; r.PodsPlaced <= w.PodsPlaced && r.GPUsUsed >= w.GPUsUsed {
				t.Errorf("packing (%d placed on %d GPUs) no better than whole-gpu (%d on %d)", r.PodsPlaced, r.GPUsUsed, w.PodsPlaced, w.GPUsUsed)
			}
		})
	}
}

// checkCapacity recomputes every GPU's assignment from the placements.
func checkCapacity(t *testing.T, name string, r *Result) {
	t.Helper()
	caps := map[string]int64{}
	for _, g := range r.GPUs {
		caps[g.UUID] = g.MemoryMiB
	}
	sum := map[string]int64{}
	for _, p := range r.Placements {
		if len(p.GPUs) == 0 {
			t.Errorf("%s: %s placed on no GPU", name, p.Pod)
		}
		seen := map[string]bool{}
		for _, id := range p.GPUs {
			if seen[id] {
				t.Errorf("%s: %s holds %s twice", name, p.Pod, id)
			}
			seen[id] = true
			if !strings.HasPrefix(id, "GPU-"+p.Node+"-") {
				t.Errorf("%s: %s on node %s holds GPU %s of another node", name, p.Pod, p.Node, id)
			}
			sum[id] += p.MemoryMiB
		}
	}
	for id, s := range sum {
		if s > caps[id] {
			t.Errorf("%s: GPU %s holds %d MiB of %d", name, id, s, caps[id])
		}
	}
}

func TestDepartures(t *testing.T) {
	tr, err := ParseTrace([]byte(`
nodes: [{name: node, count: 1, gpus: [{model: X, memory: 80Gi, count: 1}]}]
pods:
  - {name: big, count: 1, gpuMemory: 60Gi, leaveAfter: 1}
  - {name: mid, count: 1, gpuMemory: 40Gi}
  - {name: late, count: 1, gpuMemory: 40Gi}
`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(tr, score.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	// big (60) is there when mid (40) arrives: 100 > 80, so mid is unplaced;
	// big leaves after that one further arrival, so late (40) fits.
	if r.PodsPlaced != 2 || r.PodsUnplaced != 1 || r.Unplaced[0].Pod != "mid-0" {
		t.Fatalf("placed %d unplaced %v", r.PodsPlaced, r.Unplaced)
	}
	if r.Unplaced[0].Reason != "node-0: largest free GPU has 20480 MiB, pod needs 40960 MiB per GPU on 1 GPU" {
		t.Fatalf("reason %q", r.Unplaced[0].Reason)
	}
	want := []Placement{{Pod: "late-0", Node: "node-0", GPUs: []string{"GPU-node-0-0"}, MemoryMiB: 40960, group: "late"}}
	if d := cmp.Diff(want, r.Placements, cmp.AllowUnexported(Placement{})); d != "" {
		t.Fatal(d)
	}
	// 40960 / 81920
	if r.MemoryUtilization != 0.5 || r.GPUsUsed != 1 || r.LowerBoundGPUs != 1 {
		t.Fatalf("figures %+v", r)
	}
}

func TestLowerBound(t *testing.T) {
	for _, tc := range []struct {
		name   string
		slices []int64
		caps   []int64
		want   int
	}{
		{"empty", nil, []int64{80}, 0},
		// L1: 4*20 = 80 -> 1 GPU
		{"exact", []int64{20, 20, 20, 20}, []int64{80, 80}, 1},
		// L1: 3*50 = 150 -> 2 GPUs; L2: each 50 > 40, so 3.
		{"big items", []int64{50, 50, 50}, []int64{80, 80, 80, 80}, 3},
		// L1 largest first: 100 > 80 -> 80+40 -> 2
		{"mixed sizes", []int64{50, 50}, []int64{40, 80}, 2},
		// alpha=30: J1 = {60} (> 80-30), J3 = {30,30}: 1 + ceil(60/80) = 2; L1 = ceil(120/80) = 2;
		// alpha=0: J2 = {60}, J3 = {30,30}: room 80-60 = 20, rest 40 -> 1+1 = 2.
		{"mt", []int64{60, 30, 30}, []int64{80, 80, 80}, 2},
		// L2, alpha=0: J2 = {45,45,45}, J3 = {30,30,30}: room 3*35 = 105 >= 90 -> 3; L1 = ceil(225/80) = 3
		{"fill the gaps", []int64{45, 45, 45, 30, 30, 30}, []int64{80, 80, 80, 80}, 3},
	} {
		if got := LowerBound(tc.slices, tc.caps); got != tc.want {
			t.Errorf("%s: LowerBound = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestWholeGPU(t *testing.T) {
	tr, err := ParseTrace([]byte(`
nodes: [{name: node, count: 2, gpus: [{model: X, memory: 40Gi, count: 1}, {model: Y, memory: 80Gi, count: 1}]}]
pods:
  - {name: a, count: 2, gpuMemory: 10Gi}
  - {name: b, count: 1, gpuMemory: 60Gi}
  - {name: c, count: 2, gpuMemory: 10Gi, gpuCount: 2}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := RunWholeGPU(tr)
	// a-0 -> n-0 GPU0, a-1 -> n-0 GPU1, b-0 -> n-1 GPU1 (80), c-0 cannot get 2 free GPUs anywhere.
	if r.PodsPlaced != 3 || r.PodsUnplaced != 2 || r.GPUsUsed != 3 {
		t.Fatalf("%+v", r)
	}
}

func TestParseTraceErrors(t *testing.T) {
	_, err := ParseTrace([]byte(`
nodes: [{name: node, count: 0, gpus: [{model: X, memory: 0, count: 1}]}, {name: node, count: 1}]
pods: [{name: p, count: 1, gpuMemory: 1Gi, gpuCount: 65, placement: fast, leaveAfter: -1}]
`))
	want := []string{
		`nodes[0].count: Invalid value: 0: must be at least 1`,
		`nodes[0].gpus[0].memory: Invalid value: "0": must be a positive quantity such as 80Gi`,
		`nodes[1].name: Duplicate value: "node"`,
		`pods[0].gpuCount: Invalid value: 65: must be from 1 to 64`,
		`pods[0].leaveAfter: Invalid value: -1: must not be negative`,
		`pods[0].placement: Unsupported value: "fast": supported values: "binpack", "spread"`,
	}
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in %v", w, err)
		}
	}
}

// TestParseTraceHugeMemory: memory beyond one GPU (8Ei overflowed into a
// negative MiB and aborted the run) and a bare number are refused as the
// trace is read, by the webhook's rules.
func TestParseTraceHugeMemory(t *testing.T) {
	const tooLarge = "more than one GPU can have: want at most 1Ti (1048576Mi) per GPU"
	_, err := ParseTrace([]byte(`
nodes: [{name: node, count: 1, gpus: [{model: X, memory: 2Ti, count: 1}]}]
pods:
- {name: a, count: 1, gpuMemory: 8Ei}
- {name: b, count: 1, gpuMemory: 9Ei}
- {name: c, count: 1, gpuMemory: 99999999999999999999Gi}
- {name: d, count: 1, gpuMemory: 1Ti}
- {name: e, count: 1, gpuMemory: 20480}
- {name: f, count: 1, gpuMemory: "1000"}
`))
	want := "trace: [" + strings.Join([]string{
		`nodes[0].gpus[0].memory: Invalid value: "2Ti": ` + tooLarge,
		`pods[0].gpuMemory: Invalid value: "8Ei": ` + tooLarge,
		`pods[1].gpuMemory: Invalid value: "9Ei": ` + tooLarge,
		`pods[2].gpuMemory: Invalid value: "99999999999999999999Gi": ` + tooLarge,
		`pods[4].gpuMemory: Invalid value: "20480": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 20480Mi or 20Gi`,
		`pods[5].gpuMemory: Invalid value: "1000": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 1000Mi`,
	}, ", ") + "]"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}
}

func TestOutputs(t *testing.T) {
	rep, err := Simulate(loadTrace(t, "small-models.yaml"), score.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"policy", "podsPlaced", "podsUnplaced", "gpusUsed", "gpusTotal", "lowerBoundGPUs", "memoryUtilization", "oversubscribedGPUs", "placements", "gpus", "baselines"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	bl := m["baselines"].(map[string]any)
	for _, k := range []string{BaselineWholeGPU, BaselineSpread} {
		if _, ok := bl[k].(map[string]any)["gpusUsed"]; !ok {
			t.Errorf("baseline %s lacks gpusUsed", k)
		}
	}
	var txt, svg bytes.Buffer
	if err := WriteText(&txt, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(txt.String(), "GPUs used   16 of   48") {
		t.Errorf("text output:\n%s", txt.String())
	}
	if err := WriteSVG(&svg, "t", &rep.Result); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(svg.String(), "<svg") || !strings.Contains(svg.String(), "llama-8b-0: 20480 MiB") {
		t.Errorf("svg output lacks a pod bar")
	}
}
