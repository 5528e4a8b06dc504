package score

import (
	"cmp"
	"maps"
	"slices"
)

// MaxScore is the top of every scorer's range, the scheduler's
// MaxExtenderPriority.
const MaxScore = 10

// Scorer rates a placement from plain numbers: requested is what the pod adds,
// used what is already taken, capacity the total, all in MiB. The result is in
// 0..MaxScore. Scorers are pure functions, like the kube-scheduler's
// noderesources scorers.
type Scorer func(requested, used, capacity int64) float64

// MostAllocated is higher the fuller the resource is after placement:
// (used+requested)/capacity.
func MostAllocated(requested, used, capacity int64) float64 {
	if capacity <= 0 {
		return 0
	}
	return clamp(float64(used+requested) * MaxScore / float64(capacity))
}

// LeastAllocated is higher the emptier the resource is after placement:
// (capacity-used-requested)/capacity.
func LeastAllocated(requested, used, capacity int64) float64 {
	if capacity <= 0 {
		return 0
	}
	return clamp(float64(capacity-used-requested) * MaxScore / float64(capacity))
}

func clamp(v float64) float64 { return min(max(v, 0), MaxScore) }

// Strategy is one way of placing pods: how it scores a node or GPU, and in
// which order it tries GPUs.
type Strategy struct {
	// Name is the strategy's name in a PlacementPolicy.
	Name string
	// Score rates a node or a GPU after placement.
	Score Scorer
	// FullestFirst tries the GPUs with the least free memory first (best
	// fit); otherwise the emptiest first.
	FullestFirst bool
	// ProtectsEmpty says whether the policy's protectEmptyGPUs weight
	// applies; spreading wants empty GPUs.
	ProtectsEmpty bool
}

// Strategy names.
const (
	Binpack = "binpack"
	Spread  = "spread"
)

// Strategies maps a strategy name to its constructor. Unknown names are
// rejected when a policy is validated, with this list.
var Strategies = map[string]func() Strategy{
	Binpack: func() Strategy {
		return Strategy{Name: Binpack, Score: MostAllocated, FullestFirst: true, ProtectsEmpty: true}
	},
	Spread: func() Strategy {
		return Strategy{Name: Spread, Score: LeastAllocated}
	},
}

// StrategyNames lists the valid strategy names, sorted.
func StrategyNames() []string {
	return slices.Sorted(maps.Keys(Strategies))
}

// pickGPUsInto returns the indexes (into free, each GPU's free memory, 0
// for an unhealthy GPU) of count distinct GPUs with at least mem MiB free
// each, in the strategy's order, or nil when the node has fewer. Ties go to
// the lower GPU index, so picks are deterministic. It appends to buf[:0] so
// that a caller scoring many nodes reuses one buffer. A one-GPU pod, the
// common case, takes a single pass.
func pickGPUsInto(buf []int, free []int64, mem int64, count int, fullestFirst bool) []int {
	if mem <= 0 {
		return nil
	}
	if count == 1 {
		best := -1
		for i, f := range free {
			if f < mem {
				continue
			}
			if best < 0 || (fullestFirst && f < free[best]) || (!fullestFirst && f > free[best]) {
				best = i
			}
		}
		if best < 0 {
			return nil
		}
		return append(buf[:0], best)
	}
	fit := buf[:0]
	for i, f := range free {
		if f >= mem {
			fit = append(fit, i)
		}
	}
	if len(fit) < count {
		return nil
	}
	slices.SortStableFunc(fit, func(a, b int) int {
		c := cmp.Compare(free[a], free[b])
		if !fullestFirst {
			c = -c
		}
		return c
	})
	return fit[:count]
}
