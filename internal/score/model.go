// Package score is mlplane's placement core: where a pod that asks for GPU
// memory goes. It holds the per-GPU bookkeeping, the feasibility check with
// its reasons, the GPU selection and the scoring strategies, and the
// PlacementPolicy that configures them.
//
// Nothing here talks to an API server or reads a clock: the extender feeds it
// from informers, and the simulator from a trace, and both run the very same
// code. Callers serialise access; a Cluster is not safe for concurrent writes.
package score

import (
	"cmp"
	"math"
	"slices"

	"github.com/mlplane/mlplane/internal/api"
)

// GPU is the placement view of one GPU.
type GPU struct {
	// UUID identifies the GPU; AnnotationGPUIDs carries it.
	UUID string
	// Index is the GPU's index on its node.
	Index int
	// Model is the product name.
	Model string
	// CapacityMiB is the GPU's total memory.
	CapacityMiB int64
	// Healthy is false for a GPU the node agent saw fail.
	Healthy bool
	// UsedMiB is the memory the node agent last saw in use.
	UsedMiB int64
	// OutsideMiB is the memory in use that no pod's processes explain
	// (processes outside Kubernetes, the driver's own), as the node agent
	// last saw it; valid when OutsideKnown (api.GPU.OutsideUsedMiB).
	OutsideMiB   int64
	OutsideKnown bool
	// OverBookedMiB is what the GPU's pods use beyond their bookings
	// (api.GPU.OverBookedMiB); kept from bookings while it lasts.
	OverBookedMiB int64
	// AssignedMiB is the per-GPU memory of every pod assigned to the GPU.
	AssignedMiB int64
}

// outsideMiB is the memory no booking may use: what the node agent saw in
// use outside pods, or, from an agent that does not report it, the memory
// in use beyond what the GPU's pods booked. The latter undercounts while
// booked pods have not allocated their memory yet (issue 16 item 3): that
// memory hides other processes' use.
func (g GPU) outsideMiB() int64 {
	if g.OutsideKnown {
		return g.OutsideMiB
	}
	return max(0, g.UsedMiB-g.AssignedMiB)
}

// FreeMiB is what a new pod may still get on the GPU: its capacity less
// what pods booked, what is used outside pods and what pods use beyond
// their bookings; 0 when unhealthy.
func (g GPU) FreeMiB() int64 {
	if !g.Healthy {
		return 0
	}
	return max(0, g.CapacityMiB-g.AssignedMiB-g.outsideMiB()-g.OverBookedMiB)
}

// Node is the placement view of one node: its GPUs, whether its node agent is
// alive, and a summary kept current on every change so that a feasibility
// check is a couple of comparisons.
type Node struct {
	// Name is the node's name.
	Name string
	// GPUs is the node's inventory, in the agent's order.
	GPUs []GPU
	// Problem, when set, is why none of the node's GPUs may be used (missing
	// or invalid inventory).
	Problem string
	// LeaseExpiry is when the node agent's Lease runs out, in Unix
	// nanoseconds; 0 when the node has no Lease.
	LeaseExpiry int64

	// free is the free memory of each healthy GPU, largest first.
	free []int64
	// gpuFree is GPUs[i].FreeMiB(), cached.
	gpuFree []int64
	// largestHealthy is the capacity of the largest healthy GPU.
	largestHealthy int64
	// capacityMiB and usedMiB sum over healthy GPUs; used is capacity - free.
	capacityMiB, usedMiB int64
}

// refresh recomputes the summary after GPUs changed.
func (n *Node) refresh() {
	n.free = n.free[:0]
	n.gpuFree = n.gpuFree[:0]
	n.largestHealthy, n.capacityMiB, n.usedMiB = 0, 0, 0
	for _, g := range n.GPUs {
		f := g.FreeMiB()
		n.gpuFree = append(n.gpuFree, f)
		if !g.Healthy {
			continue
		}
		n.free = append(n.free, f)
		n.largestHealthy = max(n.largestHealthy, g.CapacityMiB)
		n.capacityMiB += g.CapacityMiB
		n.usedMiB += g.CapacityMiB - f
	}
	slices.SortFunc(n.free, func(a, b int64) int { return cmp.Compare(b, a) })
}

// HealthyGPUs is the number of healthy GPUs on the node.
func (n *Node) HealthyGPUs() int { return len(n.free) }

// LargestFreeMiB is the free memory of the node's emptiest healthy GPU.
func (n *Node) LargestFreeMiB() int64 {
	if len(n.free) == 0 {
		return 0
	}
	return n.free[0]
}

// Assignment is a pod's claim on GPUs: MemoryMiB on each GPU in GPUs.
type Assignment struct {
	// Node is where the pod is or will be; informational, GPUs are
	// authoritative since UUIDs are unique across the cluster.
	Node string
	// GPUs are the UUIDs the pod holds.
	GPUs []string
	// MemoryMiB is the pod's memory on each GPU.
	MemoryMiB int64
}

// NoLease and NeverExpires are LeaseExpiry values for a node without a Lease
// and one whose agent is always alive (the simulator's).
const (
	NoLease      int64 = 0
	NeverExpires int64 = math.MaxInt64
)

// Cluster is the bookkeeping of every node, GPU and assignment. Assignments
// may name GPUs of nodes not yet seen (the pod informer may run ahead of the
// node informer); they count as soon as the node appears.
type Cluster struct {
	nodes    map[string]*Node
	gpuNode  map[string]*Node // GPU UUID -> node
	assigned map[string]int64 // GPU UUID -> assigned MiB, known GPU or not
	pods     map[string]Assignment
	leases   map[string]int64
}

// NewCluster returns an empty Cluster.
func NewCluster() *Cluster {
	return &Cluster{
		nodes:    map[string]*Node{},
		gpuNode:  map[string]*Node{},
		assigned: map[string]int64{},
		pods:     map[string]Assignment{},
		leases:   map[string]int64{},
	}
}

// SetNode records a node's inventory. A non-empty problem (an invalid
// inventory, no inventory at all) makes every GPU of the node unusable.
func (c *Cluster) SetNode(name string, inv []api.GPU, problem string) {
	n := c.nodes[name]
	if n == nil {
		n = &Node{Name: name, LeaseExpiry: c.leases[name]}
		c.nodes[name] = n
	}
	for _, g := range n.GPUs {
		if c.gpuNode[g.UUID] == n {
			delete(c.gpuNode, g.UUID)
		}
	}
	n.Problem = problem
	n.GPUs = n.GPUs[:0]
	for _, g := range inv {
		n.GPUs = append(n.GPUs, GPU{
			UUID: g.UUID, Index: g.Index, Model: g.Model,
			CapacityMiB: g.MemoryMiB, Healthy: g.Healthy && problem == "",
			UsedMiB: g.UsedMiB, AssignedMiB: c.assigned[g.UUID], OverBookedMiB: g.OverBookedMiB,
		})
		if g.OutsideUsedMiB != nil {
			n.GPUs[len(n.GPUs)-1].OutsideMiB, n.GPUs[len(n.GPUs)-1].OutsideKnown = *g.OutsideUsedMiB, true
		}
		c.gpuNode[g.UUID] = n
	}
	n.refresh()
}

// DeleteNode forgets a node; its pods' assignments stay until they go.
func (c *Cluster) DeleteNode(name string) {
	n := c.nodes[name]
	if n == nil {
		return
	}
	for _, g := range n.GPUs {
		if c.gpuNode[g.UUID] == n {
			delete(c.gpuNode, g.UUID)
		}
	}
	delete(c.nodes, name)
}

// SetLease records when a node agent's Lease expires (NoLease when it has
// none).
func (c *Cluster) SetLease(name string, expiry int64) {
	if expiry == NoLease {
		delete(c.leases, name)
	} else {
		c.leases[name] = expiry
	}
	if n := c.nodes[name]; n != nil {
		n.LeaseExpiry = expiry
	}
}

// Node returns a node by name, nil when unknown. The caller must not modify it.
func (c *Cluster) Node(name string) *Node { return c.nodes[name] }

// NodeNames lists every known node, sorted.
func (c *Cluster) NodeNames() []string {
	out := make([]string, 0, len(c.nodes))
	for name := range c.nodes {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Assignment returns the assignment recorded under key.
func (c *Cluster) Assignment(key string) (Assignment, bool) {
	a, ok := c.pods[key]
	return a, ok
}

// Assignments calls fn for every recorded assignment, in no set order.
func (c *Cluster) Assignments(fn func(key string, a Assignment)) {
	for k, a := range c.pods {
		fn(k, a)
	}
}

// Assign records (or replaces) the assignment of the pod under key.
func (c *Cluster) Assign(key string, a Assignment) {
	c.Unassign(key)
	a.GPUs = slices.Clone(a.GPUs)
	c.pods[key] = a
	c.add(a, +1)
}

// Unassign removes the assignment under key, if any.
func (c *Cluster) Unassign(key string) {
	if old, ok := c.pods[key]; ok {
		delete(c.pods, key)
		c.add(old, -1)
	}
}

func (c *Cluster) add(a Assignment, sign int64) {
	touched := map[*Node]bool{}
	for _, id := range a.GPUs {
		v := c.assigned[id] + sign*a.MemoryMiB
		if v == 0 {
			delete(c.assigned, id)
		} else {
			c.assigned[id] = v
		}
		n := c.gpuNode[id]
		if n == nil {
			continue
		}
		for i := range n.GPUs {
			if n.GPUs[i].UUID == id {
				n.GPUs[i].AssignedMiB = v
			}
		}
		touched[n] = true
	}
	for n := range touched {
		n.refresh()
	}
}
