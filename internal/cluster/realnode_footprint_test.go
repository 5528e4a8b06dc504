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
	if rss, err := procRSS(self); err != nil || rss <= 0 {
		t.Errorf("procRSS(self) = %d, %v; want a positive size", rss, err)
	}
	if cpu, err := procCPUSeconds(self); err != nil || cpu < 0 {
		t.Errorf("procCPUSeconds(self) = %v, %v", cpu, err)
	}
	if _, err := procRSS(-1); err == nil {
		t.Error("procRSS of no process succeeded")
	}
}
