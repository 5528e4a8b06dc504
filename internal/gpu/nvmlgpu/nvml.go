//go:build cgo

// Package nvmlgpu is the thin adapter from NVML to gpu.Backend. It is a
// package of its own so that only the node agent links go-nvml (cgo, lazily
// bound symbols of libnvidia-ml): the local cluster, the demo and the tests
// that use the fake backend stay free of it.
package nvmlgpu

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/mlplane/mlplane/internal/gpu"
)

// nvmlBackend is the thin adapter from NVML to Backend. go-nvml dlopens
// libnvidia-ml.so.1 at Init, so the agent builds and starts without a GPU.
type nvmlBackend struct {
	lib nvml.Interface

	mu sync.Mutex
	// events receives critical XID events; nil when the driver does not
	// support them.
	events nvml.EventSet
	// xid holds the last critical XID seen per UUID; such a GPU stays
	// unhealthy until the agent restarts, as with NVIDIA's device plugin.
	xid map[string]uint64
	// lastSample is, per UUID, the timestamp of the newest process
	// utilisation sample read (NVML's lastSeenTimeStamp).
	lastSample map[string]uint64
}

// Open initialises NVML. Every failure wraps gpu.ErrNoNVML.
func Open() (gpu.Backend, error) {
	return open(nvml.New())
}

// open initialises lib (the system's NVML, or go-nvml's mock in tests) and
// registers for XID events.
func open(lib nvml.Interface) (*nvmlBackend, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, fmt.Errorf("%w: libnvidia-ml.so.1 not found (no NVIDIA driver on this node?)", gpu.ErrNoNVML)
		}
		return nil, fmt.Errorf("%w: nvmlInit: %v", gpu.ErrNoNVML, ret)
	}
	b := &nvmlBackend{lib: lib, xid: map[string]uint64{}}
	b.registerEvents()
	return b, nil
}

// registerEvents asks NVML for critical XID events on every GPU, the
// signal NVIDIA's device plugin uses to mark a GPU unhealthy. Failure is not
// fatal: the agent still sees GPUs whose queries fail.
func (b *nvmlBackend) registerEvents() {
	set, ret := b.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return
	}
	n, ret := b.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		_ = set.Free()
		return
	}
	for i := 0; i < n; i++ {
		d, ret := b.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		_ = d.RegisterEvents(nvml.EventTypeXidCriticalError, set) // NOT_SUPPORTED on some GPUs
	}
	b.events = set
}

// applicationXIDs are errors caused by a user's program, not the GPU; the
// device plugin ignores the same list.
var applicationXIDs = map[uint64]bool{13: true, 31: true, 43: true, 45: true, 68: true, 109: true}

// drainEvents records pending critical XIDs without blocking.
func (b *nvmlBackend) drainEvents() {
	if b.events == nil {
		return
	}
	for {
		e, ret := b.events.Wait(0)
		if ret != nvml.SUCCESS { // ERROR_TIMEOUT: nothing pending
			return
		}
		if e.EventType != nvml.EventTypeXidCriticalError || applicationXIDs[e.EventData] {
			continue
		}
		if e.Device == nil {
			continue
		}
		if uuid, ret := e.Device.GetUUID(); ret == nvml.SUCCESS {
			b.xid[uuid] = e.EventData
		}
	}
}

func (b *nvmlBackend) Devices() ([]gpu.Device, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drainEvents()
	n, ret := b.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvmlDeviceGetCount: %w", nvmlError(ret))
	}
	devs := make([]gpu.Device, 0, n)
	for i := 0; i < n; i++ {
		devs = append(devs, b.device(i))
	}
	return devs, nil
}

// device queries one GPU; a failed essential query makes it unhealthy.
func (b *nvmlBackend) device(i int) gpu.Device {
	d := gpu.Device{Index: i, Healthy: true}
	fail := func(what string, ret nvml.Return) {
		if d.Healthy {
			d.Healthy = false
			d.Reason = fmt.Sprintf("%s: %v", what, nvmlError(ret))
		}
	}
	h, ret := b.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		fail("nvmlDeviceGetHandleByIndex", ret)
		d.UUID = fmt.Sprintf("GPU-unknown-index-%d", i)
		return d
	}
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		fail("nvmlDeviceGetUUID", ret)
		d.UUID = fmt.Sprintf("GPU-unknown-index-%d", i)
	}
	if d.Model, ret = h.GetName(); ret != nvml.SUCCESS {
		fail("nvmlDeviceGetName", ret)
	}
	// v2 reports used memory without the driver's reservation, as
	// nvidia-smi does; older drivers only have v1.
	if m, ret := h.GetMemoryInfo_v2(); ret == nvml.SUCCESS {
		d.MemoryMiB, d.UsedMiB = mib(m.Total), mib(m.Used)
	} else if m, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		d.MemoryMiB, d.UsedMiB = mib(m.Total), mib(m.Used)
	} else {
		fail("nvmlDeviceGetMemoryInfo", ret)
	}
	if u, ret := h.GetUtilizationRates(); ret == nvml.SUCCESS {
		d.UtilizationPercent = int(u.Gpu)
	} else if ret != nvml.ERROR_NOT_SUPPORTED {
		fail("nvmlDeviceGetUtilizationRates", ret)
	}
	// The processes are known when the compute query answers and gives
	// each process's memory (NVML_VALUE_NOT_AVAILABLE otherwise, as under
	// some virtualisation); graphics processes are rare on servers and
	// their query is NOT_SUPPORTED on many, so it may fail.
	d.ProcessesKnown = true
	for i, get := range []func() ([]nvml.ProcessInfo, nvml.Return){h.GetComputeRunningProcesses, h.GetGraphicsRunningProcesses} {
		ps, ret := get()
		if ret != nvml.SUCCESS {
			if i == 0 {
				d.ProcessesKnown = false // NOT_SUPPORTED on some GPUs, NO_PERMISSION in some containers
			}
			continue
		}
		for _, p := range ps {
			if p.UsedGpuMemory == math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE (-1)
				d.ProcessesKnown = false
				continue
			}
			d.Processes = append(d.Processes, gpu.Process{PID: p.Pid, UsedMiB: mib(p.UsedGpuMemory)})
		}
	}
	b.processUtilization(h, &d)
	if x, ok := b.xid[d.UUID]; ok && d.Healthy {
		d.Healthy = false
		d.Reason = fmt.Sprintf("critical XID %d", x)
	}
	return d
}

// processUtilization sets each process's utilisation from NVML's samples
// since the previous poll of the device (nvmlDeviceGetProcessUtilization):
// the highest smUtil a process had. NOT_FOUND means no process ran a
// kernel since then: all 0. Where the query is not supported (many
// consumer GPUs, vGPU) the processes' utilisation stays unknown.
func (b *nvmlBackend) processUtilization(h nvml.Device, d *gpu.Device) {
	if !d.ProcessesKnown || len(d.Processes) == 0 {
		return
	}
	since := b.lastSample[d.UUID] // b.mu is held by Devices
	samples, ret := h.GetProcessUtilization(since)
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_FOUND:
		samples = nil
	default:
		return
	}
	util := map[uint32]int{}
	latest := since
	for _, s := range samples {
		util[s.Pid] = max(util[s.Pid], int(s.SmUtil))
		latest = max(latest, s.TimeStamp)
	}
	if b.lastSample == nil {
		b.lastSample = map[string]uint64{}
	}
	b.lastSample[d.UUID] = latest
	for i := range d.Processes {
		d.Processes[i].UtilizationPercent = min(util[d.Processes[i].PID], 100)
	}
	d.ProcessUtilizationKnown = true
}

func (b *nvmlBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.events != nil {
		_ = b.events.Free()
		b.events = nil
	}
	if ret := b.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvmlShutdown: %w", nvmlError(ret))
	}
	return nil
}

func nvmlError(ret nvml.Return) error { return errors.New(ret.Error()) }

// mib converts bytes to whole MiB, rounding down as nvidia-smi does.
func mib(bytes uint64) int64 { return int64(bytes >> 20) }
