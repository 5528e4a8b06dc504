package gpu

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/mlplane/mlplane/internal/filereload"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// FakeSpec describes the GPUs of a fake node. It is written either inline
// ("8x80Gi", "2x80Gi,2x40Gi") or as a YAML file; see docs/node-agent.md.
type FakeSpec struct {
	// Error, when set, makes every Devices call fail with it, as NVML does
	// when the driver is wedged.
	Error string        `json:"error,omitempty"`
	GPUs  []FakeGPUSpec `json:"gpus"`
}

// FakeGPUSpec is one group of identical fake GPUs.
type FakeGPUSpec struct {
	// Count is how many GPUs this entry stands for (default 1).
	Count int `json:"count,omitempty"`
	// Model defaults to "Fake GPU <memory>".
	Model string `json:"model,omitempty"`
	// Memory is the total memory, e.g. 80Gi (required).
	Memory resource.Quantity `json:"memory"`
	// Used is the memory in use (default: the sum of Processes).
	Used        *resource.Quantity `json:"used,omitempty"`
	Utilization int                `json:"utilization,omitempty"`
	// Healthy defaults to true; Reason says why it is not.
	Healthy *bool  `json:"healthy,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Error simulates a failing NVML query on this GPU: it is reported
	// unhealthy with this reason.
	Error     string            `json:"error,omitempty"`
	Processes []FakeProcessSpec `json:"processes,omitempty"`
}

// FakeProcessSpec is a simulated process of a pod holding GPU memory.
type FakeProcessSpec struct {
	PID    uint32            `json:"pid"`
	PodUID string            `json:"podUID,omitempty"`
	Used   resource.Quantity `json:"used"`
	// Utilization is the process's share of the GPU's time, 0..100, as
	// NVML's per-process samples give it; a GPU with processes reports
	// per-process utilisation, and its utilization defaults to their sum
	// (at most 100).
	Utilization int `json:"utilization,omitempty"`
}

// ParseFakeSpec parses an inline spec: comma-separated groups COUNTxSIZE or
// SIZE, where SIZE is a quantity such as 80Gi.
func ParseFakeSpec(s string) (FakeSpec, error) {
	var spec FakeSpec
	if strings.TrimSpace(s) == "" {
		return spec, errors.New("fake GPU spec is empty: want e.g. 8x80Gi or 2x80Gi,2x40Gi or a YAML file")
	}
	for _, group := range strings.Split(s, ",") {
		group = strings.TrimSpace(group)
		count, size := 1, group
		if n, rest, ok := strings.Cut(group, "x"); ok {
			c, err := strconv.Atoi(n)
			if err != nil || c < 1 {
				return FakeSpec{}, fmt.Errorf("fake GPU spec %q: group %q: count %q is not a positive whole number", s, group, n)
			}
			count, size = c, rest
		}
		q, err := resource.ParseQuantity(size)
		if err != nil {
			return FakeSpec{}, fmt.Errorf("fake GPU spec %q: group %q: size %q is not a quantity such as 80Gi", s, group, size)
		}
		spec.GPUs = append(spec.GPUs, FakeGPUSpec{Count: count, Memory: q})
	}
	return spec, spec.validate()
}

// ParseFakeSpecYAML parses the YAML form of a spec, rejecting unknown fields.
func ParseFakeSpecYAML(b []byte) (FakeSpec, error) {
	var spec FakeSpec
	if err := yaml.UnmarshalStrict(b, &spec); err != nil {
		return FakeSpec{}, fmt.Errorf("fake GPU spec: %w", err)
	}
	return spec, spec.validate()
}

// validate returns every problem of the spec at once.
func (s FakeSpec) validate() error {
	var errs []error
	for i, g := range s.GPUs {
		if g.Count < 0 {
			errs = append(errs, fmt.Errorf("gpus[%d].count: %d is negative", i, g.Count))
		}
		if g.Memory.Sign() <= 0 {
			errs = append(errs, fmt.Errorf("gpus[%d].memory: want a positive quantity such as 80Gi", i))
		}
		if g.Used != nil && (g.Used.Sign() < 0 || g.Used.Cmp(g.Memory) > 0) {
			errs = append(errs, fmt.Errorf("gpus[%d].used: %s is not between 0 and memory %s", i, g.Used.String(), g.Memory.String()))
		}
		if g.Utilization < 0 || g.Utilization > 100 {
			errs = append(errs, fmt.Errorf("gpus[%d].utilization: %d is not a percentage", i, g.Utilization))
		}
		for j, p := range g.Processes {
			if p.Used.Sign() < 0 {
				errs = append(errs, fmt.Errorf("gpus[%d].processes[%d].used is negative", i, j))
			}
			if p.Utilization < 0 || p.Utilization > 100 {
				errs = append(errs, fmt.Errorf("gpus[%d].processes[%d].utilization: %d is not a percentage", i, j, p.Utilization))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fake GPU spec: %w", err)
	}
	return nil
}

// Devices expands the spec into the devices of node nodeName.
func (s FakeSpec) Devices(nodeName string) []Device {
	var devs []Device
	for _, g := range s.GPUs {
		n := g.Count
		if n == 0 {
			n = 1
		}
		for range n {
			i := len(devs)
			d := Device{
				Index:              i,
				UUID:               FakeUUID(nodeName, i),
				Model:              g.Model,
				MemoryMiB:          quantityMiB(g.Memory),
				UtilizationPercent: g.Utilization,
				Healthy:            g.Healthy == nil || *g.Healthy,
				Reason:             g.Reason,
				ProcessesKnown:     true,
			}
			if d.Model == "" {
				d.Model = "Fake GPU " + g.Memory.String()
			}
			if !d.Healthy && d.Reason == "" {
				d.Reason = "marked unhealthy in the fake spec"
			}
			if g.Error != "" {
				d.Healthy, d.Reason = false, g.Error
			}
			var procUsed int64
			procUtil := 0
			for _, p := range g.Processes {
				used := quantityMiB(p.Used)
				procUsed += used
				procUtil += p.Utilization
				d.Processes = append(d.Processes, Process{PID: p.PID, UsedMiB: used, PodUID: p.PodUID, UtilizationPercent: p.Utilization})
			}
			if len(g.Processes) > 0 {
				d.ProcessUtilizationKnown = true
				if g.Utilization == 0 {
					d.UtilizationPercent = min(procUtil, 100)
				}
			}
			d.UsedMiB = min(procUsed, d.MemoryMiB)
			if g.Used != nil {
				d.UsedMiB = quantityMiB(*g.Used)
			}
			devs = append(devs, d)
		}
	}
	return devs
}

// quantityMiB converts a quantity of bytes to whole MiB, rounding up.
func quantityMiB(q resource.Quantity) int64 {
	const mi = 1 << 20
	return (q.Value() + mi - 1) / mi
}

// FakeUUID is the UUID of fake GPU index on node nodeName: derived from both,
// so every run, test and demo sees the same UUIDs, formatted like NVML's.
func FakeUUID(nodeName string, index int) string {
	sum := sha256.Sum256([]byte(nodeName + "/" + strconv.Itoa(index)))
	h := hex.EncodeToString(sum[:16])
	return "GPU-" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Fake is a deterministic Backend. Built from a file, it checks the file on
// every Devices call (every poll of the agent), so a test can change used
// memory or turn a GPU unhealthy at runtime by rewriting it (write a
// temporary file and rename it over the old one). The file follows
// internal/filereload's rules, as the webhook's and the extender's files do:
// a version that does not parse is logged once ("Invalid fake GPU spec;
// keeping the previous one") and the last good spec stays. Nothing counts it:
// the fake is a stand-in for tests and demos, with no metrics of its own.
// Tests in the same process use SetUsed, SetHealthy and SetError instead.
type Fake struct {
	node string
	file *filereload.File[FakeSpec] // filereload.Fixed: an inline spec

	mu     sync.Mutex
	used   map[int]int64
	health map[int]string // index -> reason; "" means healthy again
	err    error
}

var _ Backend = (*Fake)(nil)

// NewFake builds a fake backend for node nodeName. spec is inline
// ("8x80Gi") or the path of a YAML file (anything containing a path
// separator or ending in .yaml or .yml).
func NewFake(nodeName, spec string, log logr.Logger) (*Fake, error) {
	f := &Fake{node: nodeName, used: map[int]int64{}, health: map[int]string{}}
	if IsFakeSpecFile(spec) {
		file, err := filereload.Load(filereload.Options[FakeSpec]{Path: spec, Parse: ParseFakeSpecYAML, What: "fake GPU spec", Log: log})
		if err != nil {
			return nil, err
		}
		f.file = file
		return f, nil
	}
	s, err := ParseFakeSpec(spec)
	if err != nil {
		return nil, err
	}
	f.file = filereload.Fixed(s)
	return f, nil
}

// IsFakeSpecFile says whether a --fake-spec value names a file.
func IsFakeSpecFile(spec string) bool {
	return strings.ContainsRune(spec, os.PathSeparator) || strings.HasSuffix(spec, ".yaml") || strings.HasSuffix(spec, ".yml")
}

// Devices returns the devices of the spec with the overrides applied.
func (f *Fake) Devices() ([]Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, _ = f.file.Reload() // a rejected version is logged there
	spec := f.file.Current()
	if f.err != nil {
		return nil, f.err
	}
	if spec.Error != "" {
		return nil, errors.New(spec.Error)
	}
	devs := spec.Devices(f.node)
	for i := range devs {
		if used, ok := f.used[i]; ok {
			devs[i].UsedMiB = used
		}
		if reason, ok := f.health[i]; ok {
			devs[i].Healthy, devs[i].Reason = reason == "", reason
		}
	}
	return devs, nil
}

// SetUsed overrides the used memory of GPU index.
func (f *Fake) SetUsed(index int, mib int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.used[index] = mib
}

// SetHealthy overrides the health of GPU index; reason says why it is not.
func (f *Fake) SetHealthy(index int, healthy bool, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if healthy {
		reason = ""
	} else if reason == "" {
		reason = "set unhealthy"
	}
	f.health[index] = reason
}

// SetError makes Devices fail with err until SetError(nil).
func (f *Fake) SetError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Close does nothing.
func (f *Fake) Close() error { return nil }
