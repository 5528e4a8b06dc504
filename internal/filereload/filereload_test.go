package filereload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/wait"
)

// number parses "n=<int>"; anything else is rejected.
func number(data []byte) (int, error) {
	s, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "n=")
	if !ok {
		return 0, errors.New(`want "n=<int>"`)
	}
	return strconv.Atoi(s)
}

// recorder keeps the log lines and the counts a File reports.
type recorder struct {
	mu    sync.Mutex
	lines []string
	ok    int
	bad   int
}

func (r *recorder) options(path string) Options[int] {
	return Options[int]{
		Path: path, Parse: number, What: "test file",
		Log: funcr.New(func(prefix, args string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.lines = append(r.lines, args)
		}, funcr.Options{}),
		Counted: func(ok bool) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if ok {
				r.ok++
			} else {
				r.bad++
			}
		},
		Describe: func(n int) []any { return []any{"n", n} },
	}
}

// take returns and clears the log lines, and the counts so far.
func (r *recorder) take() (lines []string, ok, bad int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines, r.lines = r.lines, nil
	return lines, r.ok, r.bad
}

// write replaces path by a rename, as editors and ConfigMap updates do: the
// file is never seen half written.
func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	if _, err := Load(Options[int]{Path: missing, Parse: number, What: "test file"}); err == nil ||
		err.Error() != "test file: open "+missing+": no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	write(t, bad, "x")
	if _, err := Load(Options[int]{Path: bad, Parse: number, What: "test file"}); err == nil ||
		err.Error() != `test file `+bad+`: want "n=<int>"` {
		t.Errorf("bad file: %v", err)
	}
}

// TestReload walks a file through every kind of version: unchanged, good,
// bad, bad again, gone, back with the bad version, good again. A bad or
// unreadable version keeps the value, and is logged and counted once.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	write(t, path, "n=1")
	var r recorder
	f, err := Load(r.options(path))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		changed bool
		err     string // of Reload
		current int
		errNow  string // of Err
		lines   []string
		ok, bad int // counts so far; the first load counts as ok
	}
	parseErr := `test file ` + path + `: want "n=<int>"`
	readErr := "test file: open " + path + ": no such file or directory"
	for _, step := range []struct {
		name   string
		change func()
		want   want
	}{
		{"unchanged", func() {}, want{current: 1, ok: 1}},
		{"good", func() { write(t, path, "n=2") }, want{changed: true, current: 2,
			lines: []string{`"level"=0 "msg"="Reloaded test file" "path"="` + path + `" "n"=2`}, ok: 2}},
		{"bad", func() { write(t, path, "n=three") }, want{err: `test file ` + path + `: strconv.Atoi: parsing "three": invalid syntax`,
			current: 2, errNow: `test file ` + path + `: strconv.Atoi: parsing "three": invalid syntax`,
			lines: []string{`"msg"="Invalid test file; keeping the previous one" "error"="test file ` + path + `: strconv.Atoi: parsing \"three\": invalid syntax" "path"="` + path + `"`},
			ok:    2, bad: 1}},
		{"another bad", func() { write(t, path, "three") }, want{err: parseErr, current: 2, errNow: parseErr,
			lines: []string{`"msg"="Invalid test file; keeping the previous one" "error"="test file ` + path + `: want \"n=<int>\"" "path"="` + path + `"`},
			ok:    2, bad: 2}},
		{"the same bad again", func() {}, want{current: 2, errNow: parseErr, ok: 2, bad: 2}},
		{"gone", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, want{err: readErr, current: 2, errNow: readErr,
			lines: []string{`"msg"="Invalid test file; keeping the previous one" "error"="` + readErr + `" "path"="` + path + `"`},
			ok:    2, bad: 3}},
		{"still gone", func() {}, want{current: 2, errNow: readErr, ok: 2, bad: 3}},
		{"back, the bad version read before", func() { write(t, path, "three") }, want{current: 2, errNow: parseErr, ok: 2, bad: 3}},
		{"good again", func() { write(t, path, "n=4") }, want{changed: true, current: 4,
			lines: []string{`"level"=0 "msg"="Reloaded test file" "path"="` + path + `" "n"=4`}, ok: 3, bad: 3}},
	} {
		step.change()
		changed, err := f.Reload()
		var got want
		got.changed, got.current = changed, f.Current()
		if err != nil {
			got.err = err.Error()
		}
		if err := f.Err(); err != nil {
			got.errNow = err.Error()
		}
		got.lines, got.ok, got.bad = r.take()
		if d := cmp.Diff(step.want, got, cmp.AllowUnexported(want{})); d != "" {
			t.Errorf("%s (-want +got):\n%s", step.name, d)
		}
	}
}

// watch runs f.Watch until the test ends.
func watch(t *testing.T, f *File[int], poll time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Watch(ctx, poll)
	}()
	t.Cleanup(func() {
		cancel()
		<-done // Watch returns when ctx ends
	})
}

// waitFor polls cond until it holds, up to a generous bound (no fixed sleeps).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestWatchConfigMapSwap updates a file laid out as the kubelet lays out a
// ConfigMap volume (f -> ..data/f, ..data -> ..<timestamp>) the way the
// kubelet does: a new timestamped directory, a new ..data symlink renamed
// over the old one. The poll interval is an hour, so only the directory's
// fsnotify events can have shown the change.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(n int) {
		t.Helper()
		ts := fmt.Sprintf("..2026_01_01_00_00_%02d.000", n)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ts, "f"), []byte(fmt.Sprintf("n=%d", n)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version(1)
	path := filepath.Join(dir, "f")
	if err := os.Symlink(filepath.Join("..data", "f"), path); err != nil {
		t.Fatal(err)
	}
	var r recorder
	f, err := Load(r.options(path))
	if err != nil {
		t.Fatal(err)
	}
	watch(t, f, time.Hour)
	// Version 2 may land before the watch is set up: Watch reloads once
	// after that. Version 3 lands after, and only an event can show it.
	version(2)
	waitFor(t, "the swapped ConfigMap version", func() bool { return f.Current() == 2 })
	version(3)
	waitFor(t, "a second swap", func() bool { return f.Current() == 3 })
}

// TestWatchPolls: a change no event on the file's directory reports (the
// file is a symlink into another directory, rewritten in place there) is
// seen by the poll.
func TestWatchPolls(t *testing.T) {
	elsewhere := filepath.Join(t.TempDir(), "real")
	if err := os.WriteFile(elsewhere, []byte("n=1"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.Symlink(elsewhere, path); err != nil {
		t.Fatal(err)
	}
	var r recorder
	f, err := Load(r.options(path))
	if err != nil {
		t.Fatal(err)
	}
	watch(t, f, 20*time.Millisecond)
	if err := os.WriteFile(elsewhere, []byte("n=2"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the polled change", func() bool { return f.Current() == 2 })
}

// TestWatchWithoutDirectory: when the directory cannot be watched, Watch
// says so and polls.
func TestWatchWithoutDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "f")
	write(t, path, "n=1")
	var r recorder
	f, err := Load(r.options(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	watch(t, f, 20*time.Millisecond)
	waitFor(t, "the read error", func() bool { return f.Err() != nil })
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, path, "n=2")
	waitFor(t, "the polled file", func() bool { return f.Current() == 2 })
	lines, _, _ := r.take()
	if len(lines) == 0 || !strings.HasPrefix(lines[0], `"msg"="Cannot watch test file; polling only" "error"=`) {
		t.Errorf("log lines %q; want the first to say the file is polled only", lines)
	}
}

func TestLoadPanicsWithoutOptions(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Load without Parse did not panic")
		}
	}()
	_, _ = Load(Options[int]{Path: "x", What: "x"})
}

// TestFixed: a File without a file holds its value; Reload reports no
// change, Err nil, and Watch returns only when its context ends.
func TestFixed(t *testing.T) {
	f := Fixed("built-in")
	if changed, err := f.Reload(); changed || err != nil || f.Current() != "built-in" || f.Err() != nil {
		t.Fatalf("Reload = %v, %v; Current %q, Err %v", changed, err, f.Current(), f.Err())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Watch(ctx, time.Millisecond); close(done) }()
	select {
	case <-done:
		t.Fatal("Watch returned before its context ended")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	<-done
}
