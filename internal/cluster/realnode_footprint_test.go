package cluster

import (
	"os"
	"slices"
	"testing"

	"github.com/prometheus/procfs"
)

// The footprint's /proc readers, on this test process.
func TestProcReaders(t *testing.T) {
	self := os.Getpid()
	p, err := procfs.Self()
	if err != nil {
		t.Fatal(err)
	}
	comm, err := p.Comm()
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pidsByComm(comm)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, self) {
		t.Errorf("pidsByComm(%q) = %v, lacks this process %d", comm, pids, self)
	}
}
