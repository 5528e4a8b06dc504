// Package runner starts, watches and stops the local processes of the test
// harness: the control plane and mlplane's components of internal/cluster,
// and the servers test/bench measures. It is the one place that knows how
// such a process is started (its own session and process group, output
// appended to a log file, killed with its parent unless detached), how to
// wait until it is ready, and how to stop it with everything it started.
package runner

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Process is one program run as a local process in its own session (and
// so its own process group), its output appended to a log file. Stopping it
// signals the whole group, so helpers it started go too. Set the exported
// fields before Start; a stopped Process can be started again with the same
// ones. Its methods are safe for concurrent use.
type Process struct {
	// Name names the process in errors and log headers.
	Name string
	// Path is the executable; Args its arguments (without argv[0]).
	Path string
	Args []string
	// Env is added to this process's environment.
	Env []string
	// LogPath receives stdout and stderr, appended after a header line
	// with the time and the command line.
	LogPath string
	// Detach leaves the process running when this one exits (make demo);
	// otherwise it dies with its parent (PR_SET_PDEATHSIG).
	Detach bool
	// Files are passed as fds 3, 4, ... (exec.Cmd.ExtraFiles).
	Files []*os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // cmd.Wait's result, once done is closed
}

// Start starts the process. It is an error to start a Process that runs.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("%s is already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "\n==== %s: %s %s\n", time.Now().Format(time.RFC3339), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = p.Files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !p.Detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Exited reports whether the process has ended, and how: "never started",
// "exited with status 0", or cmd.Wait's error.
func (p *Process) Exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return true, errors.New("never started")
	}
	if !isClosed(p.done) {
		return false, nil
	}
	if p.err == nil {
		return true, errors.New("exited with status 0")
	}
	return true, p.err
}

// PID is the process id (and process group id), 0 when not running.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop sends SIGTERM to the process group, waits up to grace for the
// process to exit, then sends SIGKILL; anything left in the group is killed
// too. Stopping a process that does not run does nothing.
func (p *Process) Stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	// Anything the process left behind in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Kill ends the process at once with SIGKILL to its process group, as a
// crash or an OOM kill would, and returns once it has exited. It reports
// whether the process ran.
func (p *Process) Kill() bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return false
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	return true
}

// WaitReady polls ready every 100 ms until it returns nil. It fails when
// the process exits, when timeout passes or when ctx ends; the error names
// the last probe's error and carries the last 30 lines of the log.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, ready func(ctx context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if done, why := p.Exited(); done {
			return false, fmt.Errorf("exited: %v", why)
		}
		last = ready(ctx)
		return last == nil, nil
	})
	if err != nil {
		if last != nil {
			err = fmt.Errorf("%w (last probe: %v)", err, last)
		}
		return fmt.Errorf("%s did not become ready: %w\n--- last lines of %s:\n%s", p.Name, err, p.LogPath, p.Tail(30))
	}
	return nil
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string { return TailFile(p.LogPath, n) }

// TailFile returns the last n lines of the file at path (of its last
// 256 KiB), or a line saying why it could not be read.
func TailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const maxRead = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		_, _ = f.Seek(st.Size()-maxRead, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// HTTPProbe is a readiness probe for WaitReady that succeeds when GET url
// answers 200 within 2 s; other answers are errors carrying the status and
// the first 4 KiB of the body. insecure skips verification of the
// self-signed serving certificates the kube components make for their
// health ports; it is only ever used against 127.0.0.1.
func HTTPProbe(url string, insecure bool) func(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: insecure}, //nolint:gosec // loopback health probe
	}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// FreePort asks the kernel for a free loopback port. Another process could
// take it before the caller binds it; on loopback in a test run that is
// rare, and the process's start then fails loudly.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// KillGroup stops a detached process group by pid (make demo-down), if the
// pid still runs binary ("" accepts any): SIGTERM to the group, up to grace
// for the process to go, then SIGKILL. It reports whether it signalled.
func KillGroup(pid int, binary string, grace time.Duration) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	exe, err := p.Executable()
	if err != nil || exe == "" || (binary != "" && strings.TrimSuffix(exe, " (deleted)") != binary) {
		return false
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !Alive(pid) {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling for exit of a process we do not parent
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return true
}

// Alive reports whether pid runs: it exists and is not a zombie waiting for
// a parent (once `demo up` exits, its children's new parent reaps them, or
// not, in its own time).
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	if err != nil {
		return false
	}
	return st.State != "Z"
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
