package sim

import (
	"cmp"
	"slices"

	"github.com/mlplane/mlplane/internal/score"
)

// Baseline names.
const (
	BaselineWholeGPU = "whole-gpu"
	BaselineSpread   = "spread"
)

// Report is the simulator's output: the policy's result and the baselines.
type Report struct {
	Result
	// Baselines are the same figures for whole-GPU scheduling (one pod per
	// GPU, what plain nvidia.com/gpu does) and for the spread strategy.
	Baselines map[string]Result `json:"baselines"`
}

// Result is the outcome of one run of a trace.
type Result struct {
	// Policy is the placement policy that ran; nil for whole-gpu.
	Policy *score.PlacementPolicy `json:"policy"`
	// PodsPlaced and PodsUnplaced count arrivals that found GPUs and those
	// that found none (an unplaced pod does not retry).
	PodsPlaced   int `json:"podsPlaced"`
	PodsUnplaced int `json:"podsUnplaced"`
	// GPUsUsed is the number of GPUs holding at least one pod at the end of
	// the trace, of GPUsTotal.
	GPUsUsed  int `json:"gpusUsed"`
	GPUsTotal int `json:"gpusTotal"`
	// LowerBoundGPUs is a lower bound on the GPUs any placement needs for
	// the pods present at the end (see LowerBound).
	LowerBoundGPUs int `json:"lowerBoundGPUs"`
	// MemoryUtilization is assigned memory / capacity of the GPUs in use, at
	// the end of the trace.
	MemoryUtilization float64 `json:"memoryUtilization"`
	// OversubscribedGPUs counts GPUs that were ever assigned more than their
	// capacity during the trace; anything but 0 is a bug.
	OversubscribedGPUs int `json:"oversubscribedGPUs"`
	// Placements are the pods present at the end of the trace.
	Placements []Placement `json:"placements"`
	// Unplaced are the pods that found no GPUs, with the reason of the
	// first node that turned them down.
	Unplaced []Unplaced `json:"unplaced,omitempty"`
	// GPUs are every GPU with its memory and what is assigned at the end.
	GPUs []GPUInfo `json:"gpus"`
}

// Placement is where one pod went.
type Placement struct {
	Pod       string   `json:"pod"`
	Node      string   `json:"node"`
	GPUs      []string `json:"gpus"`
	MemoryMiB int64    `json:"memoryMiB"`
	group     string
}

// Unplaced is a pod that found no GPUs.
type Unplaced struct {
	Pod    string `json:"pod"`
	Reason string `json:"reason"`
}

// GPUInfo is one GPU at the end of the trace.
type GPUInfo struct {
	UUID        string `json:"uuid"`
	Node        string `json:"node"`
	Model       string `json:"model"`
	MemoryMiB   int64  `json:"memoryMiB"`
	AssignedMiB int64  `json:"assignedMiB"`
}

// Simulate runs the trace under policy and under both baselines.
func Simulate(tr *Trace, policy *score.PlacementPolicy) (*Report, error) {
	main, err := Run(tr, policy)
	if err != nil {
		return nil, err
	}
	sp := score.DefaultPolicy()
	sp.NodeStrategy, sp.GPUStrategy, sp.MultiGPU.GPUStrategy = score.Spread, score.Spread, score.Spread
	spread, err := Run(tr, sp)
	if err != nil {
		return nil, err
	}
	return &Report{Result: *main, Baselines: map[string]Result{
		BaselineWholeGPU: *RunWholeGPU(tr),
		BaselineSpread:   *spread,
	}}, nil
}

// Run places the trace's pods with the placement core under policy, as the
// extender would: filter every node, score those that pass, take the best
// (the first in trace order on a tie; the scheduler picks at random among
// ties), and pick GPUs there.
func Run(tr *Trace, policy *score.PlacementPolicy) (*Result, error) {
	placer, err := score.NewPlacer(policy)
	if err != nil {
		return nil, err
	}
	nodes, pods := tr.expand()
	c := score.NewCluster()
	for _, n := range nodes {
		c.SetNode(n.name, n.gpus, "")
		c.SetLease(n.name, score.NeverExpires)
	}
	p := placer.Policy()
	r := &Result{Policy: &p}
	over := map[string]bool{}
	present := map[string]Placement{}
	departures := map[int][]string{}
	for i, pd := range pods {
		f, err := placer.Facts(c, score.Pod{Key: pd.name, Request: pd.req, Override: pd.placement})
		if err != nil {
			return nil, err
		}
		best, bestScore, reason := -1, 0.0, ""
		for j, n := range nodes {
			node := c.Node(n.name)
			ok, why := f.Fit(n.name, node, 0)
			if !ok {
				if reason == "" {
					reason = n.name + ": " + why.Message
				}
				continue
			}
			if s := f.Score(node); best < 0 || s > bestScore {
				best, bestScore = j, s
			}
		}
		if best < 0 {
			r.PodsUnplaced++
			r.Unplaced = append(r.Unplaced, Unplaced{Pod: pd.name, Reason: reason})
		} else {
			name := nodes[best].name
			ids := f.Pick(c.Node(name))
			c.Assign(pd.name, score.Assignment{Node: name, GPUs: ids, MemoryMiB: pd.req.MemoryMiB})
			for _, g := range c.Node(name).GPUs {
				if g.AssignedMiB > g.CapacityMiB {
					over[g.UUID] = true
				}
			}
			r.PodsPlaced++
			present[pd.name] = Placement{Pod: pd.name, Node: name, GPUs: ids, MemoryMiB: pd.req.MemoryMiB, group: pd.group}
			if pd.leaveAfter > 0 {
				departures[i+pd.leaveAfter] = append(departures[i+pd.leaveAfter], pd.name)
			}
		}
		for _, name := range departures[i] {
			c.Unassign(name)
			delete(present, name)
		}
	}
	r.OversubscribedGPUs = len(over)
	var gpus []GPUInfo
	for _, n := range nodes {
		for _, g := range c.Node(n.name).GPUs {
			gpus = append(gpus, GPUInfo{UUID: g.UUID, Node: n.name, Model: g.Model, MemoryMiB: g.CapacityMiB, AssignedMiB: g.AssignedMiB})
		}
	}
	r.summarize(pods, present, gpus)
	return r, nil
}

// RunWholeGPU places the trace the way whole-GPU scheduling does: each pod
// takes GPUCount GPUs of its own, each large enough, on the first node that
// has them.
func RunWholeGPU(tr *Trace) *Result {
	nodes, pods := tr.expand()
	taken := map[string]string{} // GPU UUID -> pod
	r := &Result{}
	present := map[string]Placement{}
	departures := map[int][]string{}
	for i, pd := range pods {
		placed := false
		for _, n := range nodes {
			var ids []string
			for _, g := range n.gpus {
				if taken[g.UUID] == "" && g.Healthy && g.MemoryMiB >= pd.req.MemoryMiB && len(ids) < pd.req.Count {
					ids = append(ids, g.UUID)
				}
			}
			if len(ids) < pd.req.Count {
				continue
			}
			for _, id := range ids {
				taken[id] = pd.name
			}
			present[pd.name] = Placement{Pod: pd.name, Node: n.name, GPUs: ids, MemoryMiB: pd.req.MemoryMiB, group: pd.group}
			if pd.leaveAfter > 0 {
				departures[i+pd.leaveAfter] = append(departures[i+pd.leaveAfter], pd.name)
			}
			placed = true
			break
		}
		if placed {
			r.PodsPlaced++
		} else {
			r.PodsUnplaced++
			r.Unplaced = append(r.Unplaced, Unplaced{Pod: pd.name, Reason: "no node has enough free whole GPUs"})
		}
		for _, name := range departures[i] {
			for _, id := range present[name].GPUs {
				delete(taken, id)
			}
			delete(present, name)
		}
	}
	assigned := map[string]int64{}
	for _, pl := range present {
		for _, id := range pl.GPUs {
			assigned[id] += pl.MemoryMiB
		}
	}
	var gpus []GPUInfo
	for _, n := range nodes {
		for _, g := range n.gpus {
			gpus = append(gpus, GPUInfo{UUID: g.UUID, Node: n.name, Model: g.Model, MemoryMiB: g.MemoryMiB, AssignedMiB: assigned[g.UUID]})
		}
	}
	r.summarize(pods, present, gpus)
	return r
}

// summarize fills the figures from the pods present at the end.
func (r *Result) summarize(order []pod, present map[string]Placement, gpus []GPUInfo) {
	r.GPUs = gpus
	r.GPUsTotal = len(gpus)
	for _, p := range order { // arrival order
		if pl, ok := present[p.name]; ok {
			r.Placements = append(r.Placements, pl)
		}
	}
	used := map[string]bool{}
	var sizes []int64
	maxCount := 0
	for _, pl := range r.Placements {
		for _, id := range pl.GPUs {
			used[id] = true
			sizes = append(sizes, pl.MemoryMiB)
		}
		maxCount = max(maxCount, len(pl.GPUs))
	}
	var capacities []int64
	var assigned, capUsed int64
	for _, g := range gpus {
		capacities = append(capacities, g.MemoryMiB)
		if used[g.UUID] {
			assigned += g.AssignedMiB
			capUsed += g.MemoryMiB
		}
	}
	r.GPUsUsed = len(used)
	if capUsed > 0 {
		r.MemoryUtilization = float64(assigned) / float64(capUsed)
	}
	r.LowerBoundGPUs = max(LowerBound(sizes, capacities), maxCount)
}

// LowerBound is a lower bound on the number of GPUs that can hold slices
// (the per-GPU memory of every pod, once per GPU it needs) given the GPUs'
// capacities. It is the larger of
//   - L1: the fewest GPUs, largest first, whose capacity adds up to the total;
//   - L2 (Martello and Toth), computed as if every GPU were as large as the
//     largest, which can only lower the bound: slices above half a GPU need a
//     GPU each, and the small ones must fit into what those leave.
func LowerBound(slices_, capacities []int64) int {
	if len(slices_) == 0 || len(capacities) == 0 {
		return 0
	}
	caps := slices.Clone(capacities)
	slices.SortFunc(caps, func(a, b int64) int { return cmp.Compare(b, a) })
	var total int64
	for _, s := range slices_ {
		total += s
	}
	l1 := len(caps)
	var sum int64
	for i, c := range caps {
		if sum += c; sum >= total {
			l1 = i + 1
			break
		}
	}
	C := caps[0]
	s := slices.Clone(slices_)
	slices.Sort(s)
	alphas := []int64{0}
	for _, v := range s {
		if 2*v <= C && v != alphas[len(alphas)-1] {
			alphas = append(alphas, v)
		}
	}
	l2 := 0
	for _, a := range alphas {
		var n1, n2 int
		var sum2, sum3 int64
		for _, v := range s {
			switch {
			case v > C-a:
				n1++
			case 2*v > C:
				n2++
				sum2 += v
			case v >= a:
				sum3 += v
			}
		}
		rest := sum3 - (int64(n2)*C - sum2)
		l := n1 + n2
		if rest > 0 {
			l += int((rest + C - 1) / C)
		}
		l2 = max(l2, l)
	}
	return max(l1, l2)
}
