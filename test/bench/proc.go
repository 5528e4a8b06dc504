package bench

import (
	"fmt"
	"time"

	"github.com/prometheus/procfs"
)

// ProcUsage is a process's resident memory and the CPU time it has used.
type ProcUsage struct {
	RSSBytes int64
	// AnonBytes and FileBytes split the resident set (RssAnon and RssFile
	// of /proc/PID/status): the process's own memory (heap, stacks) and the
	// pages of mapped files, mostly its binary and shared libraries, which
	// the kernel maps around each touched page (fault-around, large folios).
	AnonBytes, FileBytes int64
	CPU                  time.Duration // utime + stime
}

// ReadProcUsage reads a process's resident set and its user+system CPU time
// from /proc/PID/stat and the split of the resident set from
// /proc/PID/status (Linux), parsed by procfs.
func ReadProcUsage(pid int) (ProcUsage, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return ProcUsage{}, err
	}
	s, err := p.Stat()
	if err != nil {
		return ProcUsage{}, fmt.Errorf("process %d: %w", pid, err)
	}
	st, err := p.NewStatus()
	if err != nil {
		return ProcUsage{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return ProcUsage{
		RSSBytes:  int64(s.ResidentMemory()),
		AnonBytes: int64(st.RssAnon),
		FileBytes: int64(st.RssFile),
		CPU:       time.Duration(s.CPUTime() * float64(time.Second)),
	}, nil
}

// MachineCPU is the machine's CPU time since boot, from /proc/stat's "cpu"
// line: busy (everything but idle, iowait and steal) and total (everything
// but steal), in seconds. Guest time is already counted in user and nice.
type MachineCPU struct {
	Busy, Total float64
}

// ReadMachineCPU reads /proc/stat (Linux), parsed by procfs.
func ReadMachineCPU() (MachineCPU, error) {
	st, err := procfs.NewStat()
	if err != nil {
		return MachineCPU{}, err
	}
	c := st.CPUTotal
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
	return MachineCPU{Busy: busy, Total: busy + c.Idle + c.Iowait}, nil
}

// BusySince is the fraction of CPU time busy between then and m.
func (m MachineCPU) BusySince(then MachineCPU) float64 {
	if m.Total <= then.Total {
		return 0
	}
	return (m.Busy - then.Busy) / (m.Total - then.Total)
}
