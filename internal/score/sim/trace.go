// Package sim answers what-if questions about GPU placement: it runs a trace
// of pod arrivals and departures through the placement core of package score,
// in memory, exactly as the extender would place them, and compares the
// result with whole-GPU scheduling and with spreading.
package sim

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
)

// Trace is a simulated cluster and the pods that arrive in it, in order.
type Trace struct {
	// Nodes are groups of identical nodes, named NAME-0 .. NAME-(count-1).
	Nodes []NodeGroup `json:"nodes"`
	// Pods arrive in this order; a group expands to NAME-0 .. NAME-(count-1).
	Pods []PodGroup `json:"pods"`
}

// NodeGroup is Count identical nodes.
type NodeGroup struct {
	Name  string     `json:"name"`
	Count int        `json:"count"`
	GPUs  []GPUGroup `json:"gpus"`
}

// GPUGroup is Count identical GPUs on each node of a group.
type GPUGroup struct {
	Model  string `json:"model"`
	Memory Memory `json:"memory"`
	Count  int    `json:"count"`
}

// PodGroup is Count identical pods arriving one after the other.
type PodGroup struct {
	Name      string `json:"name"`
	Count     int    `json:"count"`
	GPUMemory Memory `json:"gpuMemory"`
	// GPUCount is the number of GPUs each pod needs (default 1).
	GPUCount int `json:"gpuCount,omitempty"`
	// LeaveAfter, when above 0, makes each pod depart after that many
	// further arrivals.
	LeaveAfter int `json:"leaveAfter,omitempty"`
	// Placement is the pod's mlplane.io/placement override, if any.
	Placement string `json:"placement,omitempty"`
}

// Memory is a quantity of memory in a trace, with the text it was written as
// kept: ParseTrace applies api.ParseMemory's rules to the text (a bare number
// such as 20480 is refused as ambiguous), and messages show it as written
// (resource.Quantity clamps a value beyond int64 bytes, so 8Ei would
// otherwise be reported as 9223372036854775807).
type Memory struct {
	resource.Quantity
	text string
}

// UnmarshalJSON reads a quantity as resource.Quantity does.
func (m *Memory) UnmarshalJSON(b []byte) error {
	if err := m.Quantity.UnmarshalJSON(b); err != nil {
		return err
	}
	m.text = strings.Trim(string(b), `"`)
	return nil
}

// String is the quantity as written in the trace, or canonical when it was
// not read from one.
func (m Memory) String() string {
	if m.text != "" {
		return m.text
	}
	return m.Quantity.String()
}

// ParseTrace reads and validates a trace, reporting every problem at once.
func ParseTrace(data []byte) (*Trace, error) {
	tr := &Trace{}
	if err := yaml.UnmarshalStrict(data, tr); err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	var errs field.ErrorList
	if len(tr.Nodes) == 0 {
		errs = append(errs, field.Required(field.NewPath("nodes"), "a trace needs nodes"))
	}
	names := map[string]bool{}
	for i, n := range tr.Nodes {
		p := field.NewPath("nodes").Index(i)
		errs = append(errs, validateGroup(p, n.Name, n.Count, names)...)
		for j, g := range n.GPUs {
			gp := p.Child("gpus").Index(j)
			if g.Count < 1 {
				errs = append(errs, field.Invalid(gp.Child("count"), g.Count, "must be at least 1"))
			}
			if _, err := api.ParseMemory(g.Memory.String()); err != nil {
				errs = append(errs, field.Invalid(gp.Child("memory"), g.Memory.String(), memoryProblem(err, "80Gi")))
			}
		}
	}
	pods := map[string]bool{}
	for i, pg := range tr.Pods {
		p := field.NewPath("pods").Index(i)
		errs = append(errs, validateGroup(p, pg.Name, pg.Count, pods)...)
		if _, err := api.ParseMemory(pg.GPUMemory.String()); err != nil {
			errs = append(errs, field.Invalid(p.Child("gpuMemory"), pg.GPUMemory.String(), memoryProblem(err, "20Gi")))
		}
		if pg.GPUCount < 0 || pg.GPUCount > api.MaxGPUCount {
			errs = append(errs, field.Invalid(p.Child("gpuCount"), pg.GPUCount, fmt.Sprintf("must be from 1 to %d", api.MaxGPUCount)))
		}
		if pg.LeaveAfter < 0 {
			errs = append(errs, field.Invalid(p.Child("leaveAfter"), pg.LeaveAfter, "must not be negative"))
		}
		if _, ok := score.Strategies[pg.Placement]; pg.Placement != "" && !ok {
			errs = append(errs, field.NotSupported(p.Child("placement"), pg.Placement, score.StrategyNames()))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("trace: %w", errs.ToAggregate())
	}
	return tr, nil
}

// validateGroup checks the name and count of the group at p; seen holds the
// names of the groups before it, and gets this one.
func validateGroup(p *field.Path, name string, count int, seen map[string]bool) field.ErrorList {
	var errs field.ErrorList
	if name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	} else if seen[name] {
		errs = append(errs, field.Duplicate(p.Child("name"), name))
	}
	seen[name] = true
	if count < 1 {
		errs = append(errs, field.Invalid(p.Child("count"), count, "must be at least 1"))
	}
	return errs
}

// memoryProblem is the field error's detail for api.ParseMemory's err;
// example is a typical value.
func memoryProblem(err error, example string) string {
	if errors.Is(err, api.ErrNotPositive) {
		return "must be a positive quantity such as " + example
	}
	return err.Error()
}

// mib is a quantity ParseTrace accepted, in whole MiB, rounded up.
func mib(q resource.Quantity) int64 {
	n, _ := api.MemoryMiB(q)
	return n
}

// node is one expanded simulated node.
type node struct {
	name string
	gpus []api.GPU
}

// pod is one expanded simulated pod.
type pod struct {
	name, group, placement string
	req                    api.GPURequest
	leaveAfter             int
}

// expand turns groups into nodes with deterministic GPU UUIDs and pods in
// arrival order.
func (tr *Trace) expand() ([]node, []pod) {
	var nodes []node
	for _, g := range tr.Nodes {
		for i := range g.Count {
			n := node{name: fmt.Sprintf("%s-%d", g.Name, i)}
			for _, gg := range g.GPUs {
				for range gg.Count {
					idx := len(n.gpus)
					n.gpus = append(n.gpus, api.GPU{
						Index: idx, UUID: fmt.Sprintf("GPU-%s-%d", n.name, idx),
						Model: gg.Model, MemoryMiB: mib(gg.Memory.Quantity), Healthy: true,
					})
				}
			}
			nodes = append(nodes, n)
		}
	}
	var pods []pod
	for _, g := range tr.Pods {
		count := max(g.GPUCount, 1)
		for i := range g.Count {
			pods = append(pods, pod{
				name: fmt.Sprintf("%s-%d", g.Name, i), group: g.Name, placement: g.Placement,
				req: api.GPURequest{MemoryMiB: mib(g.GPUMemory.Quantity), Count: count}, leaveAfter: g.LeaveAfter,
			})
		}
	}
	return nodes, pods
}
