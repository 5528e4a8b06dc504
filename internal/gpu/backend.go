// Package gpu is what a node has: it reads the node's GPUs through a narrow
// Backend interface (NVML on real nodes, a deterministic fake for tests and
// KWOK nodes), and publishes them to the API server as the node inventory
// annotation, the ResourceGPUMemory capacity and a liveness Lease.
package gpu

import (
	"errors"

	"github.com/mlplane/mlplane/internal/api"
)

// Backend reads the GPUs of one node. It is the only thing the agent knows
// about the hardware; tests mock it, not NVML.
type Backend interface {
	// Devices returns every GPU of the node, ordered by index. An error means
	// the backend could not enumerate the GPUs at all (an NVML failure); a
	// GPU it can see but that fails a query is returned with Healthy false.
	Devices() ([]Device, error)
	// Close releases the backend (NVML shutdown).
	Close() error
}

// Device is one GPU as a Backend sees it.
type Device struct {
	Index int
	// UUID is the stable identifier, "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
	UUID  string
	Model string
	// MemoryMiB and UsedMiB are the total and in-use framebuffer memory.
	MemoryMiB int64
	UsedMiB   int64
	// UtilizationPercent is the percentage of time a kernel ran over the last
	// sample period (NVML's utilization.gpu), 0..100.
	UtilizationPercent int
	Healthy            bool
	// Reason says why the GPU is unhealthy; empty when healthy.
	Reason string
	// Processes are the processes holding memory on the GPU;
	// ProcessesKnown is false when the backend could not list them with
	// their memory (then the agent cannot tell pods' use from others').
	Processes      []Process
	ProcessesKnown bool
	// ProcessUtilizationKnown is true when the backend gave each process's
	// utilisation (NVML's per-process samples); otherwise a pod's share of
	// UtilizationPercent is estimated from its share of the processes'
	// memory.
	ProcessUtilizationKnown bool
}

// Process is a process holding memory on a GPU.
type Process struct {
	PID     uint32
	UsedMiB int64
	// PodUID is set by backends that know it directly (the fake); for NVML it
	// is empty and the agent resolves it from /proc/<pid>/cgroup.
	PodUID string
	// UtilizationPercent is the share of the last sample period during
	// which the process's kernels ran on the GPU, 0..100 (NVML's
	// nvmlProcessUtilizationSample_t.smUtil); valid when the device's
	// ProcessUtilizationKnown.
	UtilizationPercent int
}

// BackendFunc adapts a function to a Backend whose Close does nothing.
type BackendFunc func() ([]Device, error)

// Devices calls f.
func (f BackendFunc) Devices() ([]Device, error) { return f() }

// Close does nothing.
func (f BackendFunc) Close() error { return nil }

var _ Backend = BackendFunc(nil)

// ErrNoNVML wraps every reason the NVML backend is unavailable (no library,
// no driver, built without cgo). A node without NVML is a node without GPUs,
// not an error.
var ErrNoNVML = errors.New("NVML unavailable")

// None is the backend of a node without GPUs.
var None Backend = BackendFunc(func() ([]Device, error) { return nil, nil })

// Inventory converts devices to the wire format published in
// api.NodeAnnotationGPUs.
func Inventory(devs []Device) []api.GPU {
	out := make([]api.GPU, 0, len(devs))
	for _, d := range devs {
		out = append(out, api.GPU{
			Index:     d.Index,
			UUID:      d.UUID,
			Model:     d.Model,
			MemoryMiB: d.MemoryMiB,
			UsedMiB:   d.UsedMiB,
			Healthy:   d.Healthy,
		})
	}
	return out
}
