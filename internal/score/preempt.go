package score

import (
	"cmp"
	"math"
	"slices"
)

// VictimCandidate is a pod on a node that preemption might remove to make
// room for a pod of higher priority.
type VictimCandidate struct {
	// Key identifies the pod (its UID).
	Key string
	// Assignment is what the pod holds: MemoryMiB on each GPU in GPUs.
	Assignment Assignment
	// Priority is the pod's spec.priority.
	Priority int32
	// StartTime is when the pod started, in Unix nanoseconds (0: unknown).
	// Among pods of equal priority the one that started later is removed
	// first, as kube-scheduler's MoreImportantPod orders them.
	StartTime int64
	// ViolatesPDB is true when removing the pod would take one of its
	// PodDisruptionBudgets below what the budget allows. The caller
	// computes it as kube-scheduler does (filterPodsWithPDBViolation): in
	// order of importance, each pod uses up one of its budgets'
	// disruptionsAllowed.
	ViolatesPDB bool
	// Terminating is true for a pod being deleted: its memory is counted
	// as free already, and it is never chosen again.
	Terminating bool
}

// Victims is the outcome of SelectVictims on one node.
type Victims struct {
	// Keys are the pods to remove, most important first.
	Keys []string
	// NumPDBViolations counts the chosen pods that violate a
	// PodDisruptionBudget.
	NumPDBViolations int
	// HighestPriority is the highest priority among the chosen pods
	// (math.MinInt32 when none is chosen).
	HighestPriority int32
	// PrioritySum sums the chosen pods' priorities.
	PrioritySum int64
	// HighestStarted is the earliest start time (Unix nanoseconds) among
	// the chosen pods of HighestPriority.
	HighestStarted int64
	// MemoryMiB is the GPU memory the chosen pods free, summed over GPUs.
	MemoryMiB int64
	// GPUs are the UUIDs the preemptor gets once the chosen pods, and the
	// pods already terminating, are gone.
	GPUs []string
}

// Better reports whether v is a better outcome than o, by kube-scheduler's
// order for picking a node to preempt on (pickOneNodeForPreemption): fewer
// PodDisruptionBudget violations, then a lower highest victim priority, a
// smaller sum of victim priorities, fewer victims, a later start of the
// highest-priority victims, and last less GPU memory freed.
func (v Victims) Better(o Victims) bool {
	if c := cmp.Compare(v.NumPDBViolations, o.NumPDBViolations); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(v.HighestPriority, o.HighestPriority); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(v.PrioritySum, o.PrioritySum); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(len(v.Keys), len(o.Keys)); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(v.HighestStarted, o.HighestStarted); c != 0 {
		return c > 0
	}
	return v.MemoryMiB < o.MemoryMiB
}

// reprieveOrder sorts candidates in the order they are offered a reprieve
// (kept on the node): those that would violate a PodDisruptionBudget first,
// then by importance (higher priority, then earlier start), then smaller
// pods first, so that the fewest pods are removed.
func reprieveOrder(a, b VictimCandidate) int {
	if a.ViolatesPDB != b.ViolatesPDB {
		if a.ViolatesPDB {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
		return c
	}
	if a.StartTime != b.StartTime {
		switch {
		case a.StartTime == 0:
			return 1
		case b.StartTime == 0:
			return -1
		}
		return cmp.Compare(a.StartTime, b.StartTime)
	}
	if c := cmp.Compare(a.Assignment.MemoryMiB*int64(len(a.Assignment.GPUs)), b.Assignment.MemoryMiB*int64(len(b.Assignment.GPUs))); c != 0 {
		return c
	}
	return cmp.Compare(a.Key, b.Key)
}

// without is n as the pod would see it with the memory of removed pods (GPU
// UUID -> MiB) given back, and the pod's own earlier assignment too. Memory
// used outside any pod stays where it is.
func (f *Facts) without(n *Node, removed map[string]int64) *Node {
	v := *n
	v.GPUs = slices.Clone(n.GPUs)
	v.free, v.gpuFree = nil, nil
	for i := range v.GPUs {
		g := &v.GPUs[i]
		back := removed[g.UUID]
		if f.ownNode == n && slices.Contains(f.own.GPUs, g.UUID) {
			back += f.own.MemoryMiB
		}
		if back == 0 {
			continue
		}
		outside := g.outsideMiB()
		g.AssignedMiB -= back
		if !g.OutsideKnown {
			// Keep what no pod explains as it was.
			g.UsedMiB = outside + max(0, g.AssignedMiB)
		}
	}
	v.refresh()
	return &v
}

// SelectVictims chooses the pods to remove from node n so that the pod fits
// there per GPU, for a preemptor of the given priority: only pods of lower
// priority are candidates, pods already terminating count as gone, and
// memory used outside any pod is never freed.
//
// ok is false when the pod does not fit even with every lower-priority pod
// gone (or n is unknown, down or without inventory). ok with no Keys means
// the pod fits once the terminating pods are gone: nothing more to remove.
//
// The choice differs from kube-scheduler's SelectVictimsOnNode, which
// checks the node's total: for each GPU that could hold the pod it finds the
// pods to remove from that GPU alone (offering a reprieve in reprieveOrder),
// takes the GPUs whose removals are best by Victims.Better, and offers every
// chosen pod a reprieve once more. Where that leaves the pod without room
// (pods spread over several GPUs), it falls back to kube-scheduler's way
// over the whole node: remove every candidate, then reprieve in order.
func (f *Facts) SelectVictims(name string, n *Node, now int64, priority int32, pods []VictimCandidate) (Victims, bool) {
	if n == nil {
		return Victims{}, false
	}
	onNode := make(map[string]int, len(n.GPUs))
	for i, g := range n.GPUs {
		onNode[g.UUID] = i
	}
	gone := map[string]int64{}
	var lower []VictimCandidate
	for _, c := range pods {
		touches := false
		for _, id := range c.Assignment.GPUs {
			if _, ok := onNode[id]; ok {
				touches = true
			}
		}
		switch {
		case !touches:
		case c.Terminating:
			addMem(gone, c)
		case c.Priority < priority:
			lower = append(lower, c)
		}
	}
	fits := func(removed map[string]int64) (bool, *Node) {
		v := f.without(n, removed)
		ok, _ := f.Fit(name, v, now)
		return ok, v
	}
	if ok, v := fits(gone); ok {
		return Victims{HighestPriority: math.MinInt32, GPUs: f.Pick(v)}, true
	}
	all := cloneMem(gone)
	for _, c := range lower {
		addMem(all, c)
	}
	ok, allView := fits(all)
	if !ok {
		return Victims{}, false
	}
	slices.SortFunc(lower, reprieveOrder)

	chosen := f.perGPUVictims(allView, lower)
	removed := cloneMem(gone)
	for _, c := range chosen {
		addMem(removed, c)
	}
	if ok, _ := fits(removed); !ok {
		chosen = lower // the whole node, as kube-scheduler does
		removed = all
	}
	// Offer each chosen pod a reprieve, most important first.
	var victims []VictimCandidate
	for _, c := range chosen {
		subMem(removed, c)
		if ok, _ := fits(removed); ok {
			continue
		}
		addMem(removed, c)
		victims = append(victims, c)
	}
	out := Victims{HighestPriority: math.MinInt32}
	for _, c := range victims {
		out.add(c, c.Assignment.MemoryMiB*int64(len(c.Assignment.GPUs)))
	}
	_, v := fits(removed)
	out.GPUs = f.Pick(v)
	return out, true
}

// perGPUVictims finds, for each GPU of allView (n with every candidate gone)
// that could hold the pod, the candidates to remove from that GPU alone,
// and returns those of the Count best GPUs, in reprieveOrder. nil when fewer
// than Count GPUs could hold the pod.
func (f *Facts) perGPUVictims(allView *Node, lower []VictimCandidate) []VictimCandidate {
	m := f.req.MemoryMiB
	type gpuChoice struct {
		victims []VictimCandidate
		cost    Victims
	}
	var choices []gpuChoice
	for i, g := range allView.GPUs {
		free := allView.gpuFree[i]
		if !g.Healthy || free < m {
			continue
		}
		var vs []VictimCandidate
		cost := Victims{HighestPriority: math.MinInt32}
		for _, c := range lower {
			if !slices.Contains(c.Assignment.GPUs, g.UUID) {
				continue
			}
			if free-c.Assignment.MemoryMiB >= m {
				free -= c.Assignment.MemoryMiB // reprieved
				continue
			}
			vs = append(vs, c)
			cost.add(c, c.Assignment.MemoryMiB)
		}
		choices = append(choices, gpuChoice{vs, cost})
	}
	if len(choices) < f.req.Count {
		return nil
	}
	slices.SortStableFunc(choices, func(a, b gpuChoice) int {
		switch {
		case a.cost.Better(b.cost):
			return -1
		case b.cost.Better(a.cost):
			return 1
		}
		return 0
	})
	seen := map[string]bool{}
	var out []VictimCandidate
	for _, ch := range choices[:f.req.Count] {
		for _, c := range ch.victims {
			if !seen[c.Key] {
				seen[c.Key] = true
				out = append(out, c)
			}
		}
	}
	slices.SortFunc(out, reprieveOrder)
	return out
}

// add counts c, freeing mib, among the victims.
func (v *Victims) add(c VictimCandidate, mib int64) {
	v.Keys = append(v.Keys, c.Key)
	if c.ViolatesPDB {
		v.NumPDBViolations++
	}
	switch {
	case len(v.Keys) == 1 || c.Priority > v.HighestPriority:
		v.HighestPriority, v.HighestStarted = c.Priority, c.StartTime
	case c.Priority == v.HighestPriority:
		v.HighestStarted = min(v.HighestStarted, c.StartTime)
	}
	v.PrioritySum += int64(c.Priority)
	v.MemoryMiB += mib
}

func addMem(m map[string]int64, c VictimCandidate) {
	for _, id := range c.Assignment.GPUs {
		m[id] += c.Assignment.MemoryMiB
	}
}

func subMem(m map[string]int64, c VictimCandidate) {
	for _, id := range c.Assignment.GPUs {
		m[id] -= c.Assignment.MemoryMiB
	}
}

func cloneMem(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
