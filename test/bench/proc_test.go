package bench

import (
	"os/exec"
	"testing"
)

// TestReadMachineCPU: the machine has been busy some of the time, and
// BusySince is the busy share of the time between two readings.
func TestReadMachineCPU(t *testing.T) {
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
