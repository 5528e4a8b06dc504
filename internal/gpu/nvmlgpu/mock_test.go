//go:build cgo

package nvmlgpu

import (
	"errors"
	"math"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/google/go-cmp/cmp"

	"github.com/mlplane/mlplane/internal/gpu"
)

// These tests drive the adapter through go-nvml's own generated mocks
// (pkg/nvml/mock), so its logic runs on machines without a GPU. A mock
// method left nil panics when called: a query the adapter must not make
// leaves its Func unset.

const mi = 1 << 20

// machine is a mock NVML with devs and an event set whose Wait hands out
// events in order, then ERROR_TIMEOUT.
type machine struct {
	lib    *mock.Interface
	events *mock.EventSet
	queue  []nvml.EventData
	devs   []nvml.Device
}

func newMachine(devs ...nvml.Device) *machine {
	m := &machine{devs: devs}
	m.events = &mock.EventSet{
		WaitFunc: func(timeout uint32) (nvml.EventData, nvml.Return) {
			if timeout != 0 {
				panic("drainEvents must not block")
			}
			if len(m.queue) == 0 {
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
			e := m.queue[0]
			m.queue = m.queue[1:]
			return e, nvml.SUCCESS
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	m.lib = &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		EventSetCreateFunc: func() (nvml.EventSet, nvml.Return) { return m.events, nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(m.devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if m.devs[i] == nil {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return m.devs[i], nvml.SUCCESS
		},
	}
	return m
}

func (m *machine) open(t *testing.T) *nvmlBackend {
	t.Helper()
	b, err := open(m.lib)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (m *machine) devices(t *testing.T, b *nvmlBackend) []gpu.Device {
	t.Helper()
	devs, err := b.Devices()
	if err != nil {
		t.Fatal(err)
	}
	return devs
}

// h100 is a healthy GPU: memory v2, utilisation, no processes, graphics
// process queries not supported. Per-process samples are not set: with no
// processes the adapter must not ask for them.
func h100(uuid string, usedBytes uint64) *mock.Device {
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			return nvml.Memory_v2{Total: 81559 * mi, Used: usedBytes, Free: 81559*mi - usedBytes}, nvml.SUCCESS
		},
		GetUtilizationRatesFunc:         func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 40}, nvml.SUCCESS },
		GetComputeRunningProcessesFunc:  func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS },
		GetGraphicsRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED },
		RegisterEventsFunc:              func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS },
	}
}

// TestOpenWithoutDriver: a missing library and a failed nvmlInit both wrap
// gpu.ErrNoNVML (the agent then runs a node without GPUs), with messages
// that say which.
func TestOpenWithoutDriver(t *testing.T) {
	for _, tc := range []struct {
		ret  nvml.Return
		want string
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, "NVML unavailable: libnvidia-ml.so.1 not found (no NVIDIA driver on this node?)"},
		{nvml.ERROR_DRIVER_NOT_LOADED, "NVML unavailable: nvmlInit: " + nvml.ERROR_DRIVER_NOT_LOADED.Error()},
	} {
		lib := &mock.Interface{InitFunc: func() nvml.Return { return tc.ret }}
		_, err := open(lib)
		if err == nil || err.Error() != tc.want || !errors.Is(err, gpu.ErrNoNVML) {
			t.Errorf("open with nvmlInit = %v: %v, want %q wrapping ErrNoNVML", tc.ret, err, tc.want)
		}
	}
}

// TestDevicesFallbacks: memory info v2, then v1; utilisation not supported
// is no failure, any other error is; the first failed essential query names
// the reason; a GPU whose handle is lost keeps its index.
func TestDevicesFallbacks(t *testing.T) {
	ok := h100("GPU-0", 1024*mi+4095) // rounds down to 1024 MiB, as nvidia-smi does

	v1 := h100("GPU-1", 0)
	v1.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { return nvml.Memory_v2{}, nvml.ERROR_FUNCTION_NOT_FOUND } // an old driver
	v1.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		return nvml.Memory{Total: 40960 * mi, Used: 2048 * mi}, nvml.SUCCESS
	}
	v1.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED }

	broken := h100("GPU-3", 0)
	broken.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { return nvml.Memory_v2{}, nvml.ERROR_UNKNOWN }
	broken.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_UNKNOWN }
	broken.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_GPU_IS_LOST }

	m := newMachine(ok, v1, nil, broken) // index 2: nvmlDeviceGetHandleByIndex fails
	b := m.open(t)
	want := []gpu.Device{
		{Index: 0, UUID: "GPU-0", Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81559, UsedMiB: 1024, UtilizationPercent: 40, Healthy: true, ProcessesKnown: true},
		{Index: 1, UUID: "GPU-1", Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 40960, UsedMiB: 2048, Healthy: true, ProcessesKnown: true},
		{Index: 2, UUID: "GPU-unknown-index-2", Reason: "nvmlDeviceGetHandleByIndex: " + nvml.ERROR_GPU_IS_LOST.Error()},
		// The memory query fails first; the utilisation failure does not
		// replace the reason.
		{Index: 3, UUID: "GPU-3", Model: "NVIDIA H100 80GB HBM3", Reason: "nvmlDeviceGetMemoryInfo: " + nvml.ERROR_UNKNOWN.Error(), ProcessesKnown: true},
	}
	if d := cmp.Diff(want, m.devices(t, b)); d != "" {
		t.Errorf("devices (-want +got):\n%s", d)
	}
	if n := len(v1.GetMemoryInfoCalls()); n != 1 {
		t.Errorf("v1 memory info asked %d times of the GPU without v2, want 1", n)
	}
	if n := len(ok.GetMemoryInfoCalls()); n != 0 {
		t.Errorf("v1 memory info asked %d times of a GPU with v2, want 0", n)
	}

	m.lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if _, err := b.Devices(); err == nil || err.Error() != "nvmlDeviceGetCount: "+nvml.ERROR_UNKNOWN.Error() {
		t.Errorf("Devices with a failing count = %v", err)
	}
}

// TestProcesses: processes from the compute and graphics lists; one whose
// memory NVML cannot give (NVML_VALUE_NOT_AVAILABLE) or a compute list that
// fails makes the GPU's processes unknown, and then no per-process samples
// are asked for.
func TestProcesses(t *testing.T) {
	listed := h100("GPU-0", 0)
	listed.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: 3000 * mi}}, nvml.SUCCESS
	}
	listed.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 11, UsedGpuMemory: 100 * mi}}, nvml.SUCCESS
	}
	listed.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}

	notAvailable := h100("GPU-1", 0)
	notAvailable.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 20, UsedGpuMemory: 512 * mi}, {Pid: 21, UsedGpuMemory: math.MaxUint64}}, nvml.SUCCESS
	}

	noPermission := h100("GPU-2", 0)
	noPermission.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_NO_PERMISSION }

	m := newMachine(listed, notAvailable, noPermission)
	got := m.devices(t, m.open(t))
	type procs struct {
		Processes               []gpu.Process
		ProcessesKnown          bool
		ProcessUtilizationKnown bool
	}
	want := []procs{
		// Per-process samples not supported: utilisation unknown.
		{Processes: []gpu.Process{{PID: 10, UsedMiB: 3000}, {PID: 11, UsedMiB: 100}}, ProcessesKnown: true},
		// PID 21's memory is NVML_VALUE_NOT_AVAILABLE: left out, and the
		// list is not complete.
		{Processes: []gpu.Process{{PID: 20, UsedMiB: 512}}},
		{},
	}
	var have []procs
	for _, d := range got {
		have = append(have, procs{d.Processes, d.ProcessesKnown, d.ProcessUtilizationKnown})
		if !d.Healthy {
			t.Errorf("GPU %s unhealthy (%s): process queries are not essential", d.UUID, d.Reason)
		}
	}
	if d := cmp.Diff(want, have); d != "" {
		t.Errorf("processes (-want +got):\n%s", d)
	}
}

// TestProcessUtilization: each process gets the highest smUtil of its
// samples since the last poll (at most 100); the next poll asks from the
// newest sample's timestamp; NOT_FOUND (no kernel ran) is 0 for all, with
// the utilisation known; NOT_SUPPORTED leaves it unknown.
func TestProcessUtilization(t *testing.T) {
	dev := h100("GPU-0", 4000*mi)
	dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: 3000 * mi}, {Pid: 11, UsedGpuMemory: 1000 * mi}}, nvml.SUCCESS
	}
	answers := []struct {
		samples []nvml.ProcessUtilizationSample
		ret     nvml.Return
	}{
		{[]nvml.ProcessUtilizationSample{
			{Pid: 10, TimeStamp: 100, SmUtil: 30},
			{Pid: 10, TimeStamp: 200, SmUtil: 55},
			{Pid: 11, TimeStamp: 150, SmUtil: 120}, // out of range: capped at 100
		}, nvml.SUCCESS},
		{nil, nvml.ERROR_NOT_FOUND},
		{nil, nvml.ERROR_NOT_SUPPORTED},
	}
	var since []uint64
	dev.GetProcessUtilizationFunc = func(ts uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		a := answers[len(since)]
		since = append(since, ts)
		return a.samples, a.ret
	}
	m := newMachine(dev)
	b := m.open(t)
	type util struct {
		Percent []int
		Known   bool
	}
	var got []util
	for range answers {
		d := m.devices(t, b)[0]
		u := util{Known: d.ProcessUtilizationKnown}
		for _, p := range d.Processes {
			u.Percent = append(u.Percent, p.UtilizationPercent)
		}
		got = append(got, u)
	}
	want := []util{{[]int{55, 100}, true}, {[]int{0, 0}, true}, {[]int{0, 0}, false}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("utilisation per poll (-want +got):\n%s", d)
	}
	// The first poll asks for everything; the next from the newest sample
	// (200); NOT_FOUND moves nothing.
	if d := cmp.Diff([]uint64{0, 200, 200}, since); d != "" {
		t.Errorf("lastSeenTimeStamp per poll (-want +got):\n%s", d)
	}
}

// TestXIDEvents: every GPU is registered for critical XID events; a
// critical XID marks its GPU unhealthy until the agent restarts, while
// errors a user's program causes (XID 13 ...), other event types and events
// without a device are ignored.
func TestXIDEvents(t *testing.T) {
	d0, d1 := h100("GPU-0", 0), h100("GPU-1", 0)
	m := newMachine(d0, d1)
	b := m.open(t)
	for _, d := range []*mock.Device{d0, d1} {
		calls := d.RegisterEventsCalls()
		if len(calls) != 1 || calls[0].V != nvml.EventTypeXidCriticalError || calls[0].EventSet != m.events {
			t.Errorf("RegisterEvents calls %+v, want one for critical XIDs on the backend's set", calls)
		}
	}
	m.queue = []nvml.EventData{
		{Device: d0, EventType: nvml.EventTypeXidCriticalError, EventData: 13}, // a program's fault
		{Device: d0, EventType: nvml.EventTypeSingleBitEccError, EventData: 1},
		{EventType: nvml.EventTypeXidCriticalError, EventData: 48}, // no device
		{Device: d1, EventType: nvml.EventTypeXidCriticalError, EventData: 79},
	}
	health := func() []string {
		var out []string
		for _, d := range m.devices(t, b) {
			out = append(out, d.UUID+" "+d.Reason)
		}
		return out
	}
	want := []string{"GPU-0 ", "GPU-1 critical XID 79"}
	if d := cmp.Diff(want, health()); d != "" {
		t.Errorf("after the events (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want, health()); d != "" {
		t.Errorf("a poll later, no new events (-want +got):\n%s", d)
	}
}

// TestNoEvents: a driver without event sets still lists its GPUs.
func TestNoEvents(t *testing.T) {
	m := newMachine(h100("GPU-0", 0))
	m.lib.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
	b := m.open(t)
	if devs := m.devices(t, b); len(devs) != 1 || !devs[0].Healthy {
		t.Errorf("devices %+v", devs)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(m.events.FreeCalls()); n != 0 {
		t.Errorf("Free called %d times on a set never created", n)
	}
}

// TestClose frees the event set and shuts NVML down, reporting a failed
// shutdown.
func TestClose(t *testing.T) {
	m := newMachine(h100("GPU-0", 0))
	b := m.open(t)
	m.lib.ShutdownFunc = func() nvml.Return { return nvml.ERROR_UNINITIALIZED }
	if err := b.Close(); err == nil || err.Error() != "nvmlShutdown: "+nvml.ERROR_UNINITIALIZED.Error() {
		t.Errorf("Close = %v", err)
	}
	if n := len(m.events.FreeCalls()); n != 1 {
		t.Errorf("event set freed %d times, want 1", n)
	}
}
