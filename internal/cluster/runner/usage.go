package runner

import (
	"fmt"
	"time"

	"github.com/prometheus/procfs"
)

// Usage is a process's resident memory and the CPU time it has used.
type Usage struct {
	// RSSBytes is the resident set (VmRSS).
	RSSBytes int64
	// AnonBytes and FileBytes split the resident set (RssAnon and RssFile):
	// the process's own memory (heap, stacks) and the pages of mapped files,
	// mostly its binary and shared libraries, which the kernel maps around
	// each touched page (fault-around, large folios).
	AnonBytes, FileBytes int64
	// CPU is the user and system time it has used (utime + stime).
	CPU time.Duration
}

// ReadUsage reads process pid's Usage from /proc/PID/stat and
// /proc/PID/status (Linux), parsed by procfs. It fails when the process is
// gone.
func ReadUsage(pid int) (Usage, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return Usage{}, err
	}
	stat, err := p.Stat()
	if err != nil {
		return Usage{}, fmt.Errorf("process %d: %w", pid, err)
	}
	st, err := p.NewStatus()
	if err != nil {
		return Usage{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return Usage{
		RSSBytes:  int64(st.VmRSS),
		AnonBytes: int64(st.RssAnon),
		FileBytes: int64(st.RssFile),
		CPU:       time.Duration(stat.CPUTime() * float64(time.Second)),
	}, nil
}
