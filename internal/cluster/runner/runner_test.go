package runner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

func TestProcessLifecycle(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ready")
	// The shell starts a child in its process group: Stop must end both.
	p := &Process{
		Name:    "sh",
		Path:    "/bin/sh",
		Args:    []string{"-c", `sleep 300 & echo $! > "$MARKER.tmp"; mv "$MARKER.tmp" "$MARKER"; echo "$VALUE"; wait`},
		Env:     []string{"VALUE=hello", "MARKER=" + marker},
		LogPath: filepath.Join(dir, "sh.log"),
	}
	if done, why := p.Exited(); !done || why.Error() != "never started" {
		t.Fatalf("before Start: Exited() = %v, %v", done, why)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err == nil || !strings.HasPrefix(err.Error(), "sh is already running (pid ") {
		t.Fatalf("second Start: err = %v", err)
	}
	err := p.WaitReady(context.Background(), time.Minute, func(context.Context) error {
		_, err := os.Stat(marker)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	if pid == 0 {
		t.Fatal("PID() = 0 for a running process")
	}
	if got := p.Tail(1); got != "hello" {
		t.Errorf("Tail(1) = %q, want the child's output", got)
	}
	p.Stop(10 * time.Second)
	if p.PID() != 0 {
		t.Error("PID() != 0 after Stop")
	}
	if Alive(pid) {
		t.Errorf("Alive(%d) after Stop", pid)
	}
	// The shell's child got SIGKILL with the group; it may linger as a
	// zombie until its new parent reaps it, which Alive counts as gone.
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return !Alive(child), nil
	})
	if err != nil {
		t.Errorf("the shell's child %d still runs after Stop: %v", child, err)
	}
}

func TestWaitReadyExited(t *testing.T) {
	dir := t.TempDir()
	p := &Process{Name: "false", Path: "/bin/sh", Args: []string{"-c", "echo failing; exit 3"}, LogPath: filepath.Join(dir, "false.log")}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := p.WaitReady(context.Background(), time.Minute, func(context.Context) error { return errors.New("not yet") })
	if err == nil {
		t.Fatal("WaitReady succeeded for a process that exited")
	}
	for _, want := range []string{"false did not become ready: exited: exit status 3", "--- last lines of " + p.LogPath + ":\n", "\nfailing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if p.Kill() {
		t.Error("Kill() reported a process that had exited")
	}
}

func TestFreePort(t *testing.T) {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort() = %d", p)
	}
}

func TestTailFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := TailFile(path, 2); got != "b\nc" {
		t.Errorf("TailFile(2) = %q, want %q", got, "b\nc")
	}
	if got := TailFile(filepath.Join(t.TempDir(), "missing"), 2); !strings.HasPrefix(got, "(no log: ") {
		t.Errorf("TailFile of a missing file = %q", got)
	}
}
