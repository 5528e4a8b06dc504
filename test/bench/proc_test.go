package bench

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestReadProcUsage reads this process's own /proc entries: it has resident
// memory, its CPU time agrees with getrusage(2) to well within a second (a
// unit error would be off by a factor of 100 or more), and the machine has
// been busy some of the time.
// (The resident set's anonymous and file parts come from /proc/PID/status.)
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
	// The split: both parts present (a test binary has a heap and is a
	// mapped file), neither more than the whole (read a moment apart, so
	// allow a little growth).
	if u.AnonBytes <= 0 || u.FileBytes <= 0 || u.AnonBytes+u.FileBytes > u.RSSBytes+4<<20 {
		t.Errorf("own usage %+v: want anonymous and file pages that add up to the resident set", u)
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

// TestComponentCPU finds a process by a directory in its command line
// (procfs' list of processes and their command lines) and names it by its
// program.
func TestComponentCPU(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("/bin/sh", "-c", "sleep 30", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	got := componentCPU(dir)
	if _, ok := got["sh"]; !ok {
		t.Errorf("componentCPU = %v: no sh, the process started with %s in its command line", got, dir)
	}
	if _, ok := got["bench"]; !ok || len(got) != 2 {
		t.Errorf("componentCPU = %v: want this process (bench) and sh only", got)
	}
}
