package bench

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestReadProcUsage reads this process's own /proc entries: it has resident
// memory, its CPU time agrees with getrusage(2) to well within a second (a
// unit error would be off by a factor of 100 or more), and the machine has
// been busy some of the time.
func TestReadProcUsage(t *testing.T) {
	u, err := ReadProcUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	rusage := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if u.RSSBytes <= 0 || (u.CPU-rusage).Abs() > 500*time.Millisecond {
		t.Errorf("own usage %+v: want resident memory and CPU time near getrusage's %v", u, rusage)
	}
	if _, err := ReadProcUsage(-1); err == nil {
		t.Error("ReadProcUsage(-1) succeeded")
	}
	m, err := ReadMachineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if m.Busy <= 0 || m.Total < m.Busy {
		t.Errorf("machine CPU %+v: want 0 < busy <= total", m)
	}
	if b := (MachineCPU{Busy: 3, Total: 10}).BusySince(MachineCPU{Busy: 1, Total: 6}); b != 0.5 {
		t.Errorf("BusySince = %v, want (3-1)/(10-6) = 0.5", b)
	}
}
