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
// (--fake-spec g.GPUSpec()) publishes for nodeName: same UUIDs (FakeUUID),
// model name and sizes, so a test sees the same GPUs whether the cluster or
// a real agent publishes.
func FakeGPUs(nodeName string, g NodeGroup) []api.GPU {
	gpus := make([]api.GPU, g.GPUs)
	for i := range gpus {
		gpus[i] = api.GPU{
			Index:     i,
			UUID:      FakeUUID(nodeName, i),
			Model:     "Fake GPU " + formatMiB(g.MemoryMiB),
			MemoryMiB: g.MemoryMiB,
			Healthy:   true,
			// The fake backend lists its processes (none): nothing is
			// used outside pods, as the agent publishes it.
			OutsideUsedMiB: new(int64(0)),
		}
	}
	return gpus
}

// FakeUUID is the UUID of fake GPU index on node nodeName: the node agent's
// fake backend derivation (internal/gpu links no NVML; its adapter lives in
// internal/gpu/nvmlgpu), so the cluster and the agents never disagree.
func FakeUUID(nodeName string, index int) string { return gpu.FakeUUID(nodeName, index) }

// formatMiB renders MiB as the shortest exact quantity: 81920 -> "80Gi".
func formatMiB(mib int64) string {
	if mib%1024 == 0 {
		return fmt.Sprintf("%dGi", mib/1024)
	}
	return fmt.Sprintf("%dMi", mib)
}
