package runner

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestReadUsage reads this process's own /proc entries: it has resident
// memory, split into anonymous and file pages that add up to it (read a
// moment apart, so a little growth is allowed), and its CPU time agrees
// with getrusage(2) to well within a second (a unit error would be off by a
// factor of 100 or more).
func TestReadUsage(t *testing.T) {
	u, err := ReadUsage(os.Getpid())
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
	if u.AnonBytes <= 0 || u.FileBytes <= 0 || u.AnonBytes+u.FileBytes > u.RSSBytes+4<<20 {
		t.Errorf("own usage %+v: want anonymous and file pages that add up to the resident set", u)
	}
	if _, err := ReadUsage(-1); err == nil {
		t.Error("ReadUsage(-1) succeeded")
	}
}
