package cluster

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/gpu"
)

// NodeGroup is one term of a node spec: Count nodes, each with GPUs GPUs of
// MemoryMiB each.
type NodeGroup struct {
	Count     int
	GPUs      int
	MemoryMiB int64
}

// GPUSpec is the per-node part of the group, in the form the node agent's
// --fake-spec flag takes ("8x80Gi").
func (g NodeGroup) GPUSpec() string {
	return fmt.Sprintf("%dx%s", g.GPUs, formatMiB(g.MemoryMiB))
}

// String renders the group back in spec form ("4x8x80Gi").
func (g NodeGroup) String() string { return fmt.Sprintf("%dx%s", g.Count, g.GPUSpec()) }

// maxSpecNodes bounds a spec so that a typo cannot ask for a million nodes.
const maxSpecNodes = 10000

// ParseNodeSpec parses a comma-separated list of NODESxGPUSxSIZE terms, such
// as "4x8x80Gi" or "2x8x80Gi,2x4x40Gi": NODES nodes, each with GPUS GPUs of
// SIZE memory (a Kubernetes quantity, at least 1Mi).
func ParseNodeSpec(spec string) ([]NodeGroup, error) {
	var groups []NodeGroup
	total := 0
	for _, term := range strings.Split(spec, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			continue
		}
		parts := strings.Split(term, "x")
		if len(parts) != 3 {
			return nil, fmt.Errorf("node spec %q: term %q: want NODESxGPUSxSIZE, e.g. 4x8x80Gi", spec, term)
		}
		nodes, err := strconv.Atoi(parts[0])
		if err != nil || nodes < 1 {
			return nil, fmt.Errorf("node spec %q: term %q: node count %q is not a whole number >= 1", spec, term, parts[0])
		}
		gpus, err := strconv.Atoi(parts[1])
		if err != nil || gpus < 1 || gpus > api.MaxGPUCount {
			return nil, fmt.Errorf("node spec %q: term %q: GPU count %q is not a whole number from 1 to %d", spec, term, parts[1], api.MaxGPUCount)
		}
		q, err := resource.ParseQuantity(parts[2])
		if err != nil || q.Value() < 1<<20 {
			return nil, fmt.Errorf("node spec %q: term %q: GPU memory %q is not a quantity of at least 1Mi, e.g. 80Gi", spec, term, parts[2])
		}
		total += nodes
		if total > maxSpecNodes {
			return nil, fmt.Errorf("node spec %q: more than %d nodes", spec, maxSpecNodes)
		}
		groups = append(groups, NodeGroup{Count: nodes, GPUs: gpus, MemoryMiB: q.Value() >> 20})
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("node spec %q: no nodes; want e.g. 4x8x80Gi or 2x8x80Gi,2x4x40Gi", spec)
	}
	return groups, nil
}

// FakeGPUs is the inventory a node agent with the fake backend
// (--fake-spec g.GPUSpec()) publishes for nodeName: the same code computes
// it, so UUIDs and sizes match whether the cluster or a real agent
// publishes. UUIDs derive from the node name and index.
func FakeGPUs(nodeName string, g NodeGroup) []api.GPU {
	spec, err := gpu.ParseFakeSpec(g.GPUSpec())
	if err != nil { // ParseNodeSpec accepted the group, so this cannot happen
		panic(fmt.Sprintf("fake GPU spec %q: %v", g.GPUSpec(), err))
	}
	return gpu.Inventory(spec.Devices(nodeName))
}

// formatMiB renders MiB as the shortest exact quantity: 81920 -> "80Gi".
func formatMiB(mib int64) string {
	if mib%1024 == 0 {
		return fmt.Sprintf("%dGi", mib/1024)
	}
	return fmt.Sprintf("%dMi", mib)
}
