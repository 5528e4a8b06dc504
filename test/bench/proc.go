package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; 100
// on every Linux architecture Go supports.
const clockTicks = 100

// ProcUsage is a process's resident memory and the CPU time it has used.
type ProcUsage struct {
	RSSBytes int64
	CPU      time.Duration // utime + stime
}

// ReadProcUsage reads VmRSS from /proc/PID/status and utime+stime from
// /proc/PID/stat (Linux).
func ReadProcUsage(pid int) (ProcUsage, error) {
	var u ProcUsage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return u, fmt.Errorf("VmRSS %q: %w", rest, err)
				}
				u.RSSBytes = kb << 10
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces; the fields after it start
	// after the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	u.CPU = time.Duration(ut+st) * time.Second / clockTicks
	return u, nil
}

// MachineCPU is the machine's CPU time since boot, from /proc/stat's "cpu"
// line: busy (everything but idle and iowait) and total.
type MachineCPU struct {
	Busy, Total int64 // USER_HZ ticks
}

// ReadMachineCPU reads /proc/stat (Linux).
func ReadMachineCPU() (MachineCPU, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var m MachineCPU
	for i, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("/proc/stat: %q: %w", s, err)
		}
		if i == 7 { // steal: neither ours nor idle
			continue
		}
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		m.Total += v
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += v
		}
	}
	return m, nil
}

// BusySince is the fraction of CPU time busy between then and m.
func (m MachineCPU) BusySince(then MachineCPU) float64 {
	if m.Total <= then.Total {
		return 0
	}
	return float64(m.Busy-then.Busy) / float64(m.Total-then.Total)
}
