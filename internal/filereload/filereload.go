// Package filereload keeps a value parsed from a file current while the file
// changes. It is the one reloader behind the webhook's InjectionConfig, the
// extender's PlacementPolicy and the fake GPU backend's spec, so all three
// follow the same rules:
//
//   - The first read must succeed: Load returns its error and the binary
//     does not start with a file it cannot use.
//   - Every later version of the file (bytes that differ from the last
//     version read) is parsed once. A version that cannot be read or parsed
//     is rejected: the value in force stays, and the rejection is logged and
//     counted once per version, not once per check.
//   - Changes are seen through fsnotify on the file's directory (read once
//     a burst of events has settled), and by re-reading the file every poll
//     interval. Kubernetes updates a mounted
//     ConfigMap or Secret by swapping the ..data symlink in that directory:
//     an event on the directory, none on the file; the poll catches what
//     events miss (network and overlay file systems, a watch that failed).
package filereload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
)

// Options configure a File. Path, Parse and What are required.
type Options[T any] struct {
	// Path is the file.
	Path string
	// Parse turns the file's bytes into a value; an error rejects that
	// version of the file.
	Parse func(data []byte) (T, error)
	// What names the file in errors and log lines ("InjectionConfig").
	What string
	// Log receives "Reloaded <What>" when a new version is taken and
	// "Invalid <What>; keeping the previous one" when one is rejected
	// (default: discarded).
	Log logr.Logger
	// Counted, when set, is called once for every version read, the first
	// included: ok is false when the version was rejected. Callers count it
	// in a metric by result.
	Counted func(ok bool)
	// Describe, when set, gives key/value pairs logged with a value that
	// was taken (the placement strategies of a policy, say).
	Describe func(T) []any
}

// File holds the value parsed from the last good version of a file. It is
// safe for concurrent use.
type File[T any] struct {
	o   Options[T]
	cur atomic.Pointer[T]

	mu sync.Mutex
	// last is the last version read, taken or rejected; parseErr is why it
	// was rejected (nil: taken). readErr is the last read's error (nil: it
	// read), kept so that a file that stays unreadable is logged and
	// counted once.
	last     []byte
	parseErr error
	readErr  error
}

// Load reads and parses the file once; it fails when either fails, with
// "<What>: <the read error>" or "<What> <Path>: <the parse error>".
// Programmer errors (no Path, Parse or What) panic.
func Load[T any](o Options[T]) (*File[T], error) {
	if o.Path == "" || o.Parse == nil || o.What == "" {
		panic("filereload: Options need Path, Parse and What")
	}
	if o.Log.GetSink() == nil {
		o.Log = logr.Discard()
	}
	f := &File[T]{o: o}
	data, err := os.ReadFile(o.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.What, err)
	}
	v, err := o.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", o.What, o.Path, err)
	}
	f.cur.Store(&v)
	f.last = data
	f.count(true)
	return f, nil
}

// Fixed is a File that holds v and no file: for a component started
// without one (the built-in InjectionConfig or placement policy, an inline
// fake GPU spec), so that its callers need no second path. Reload reports
// no change, Err is nil, and Watch waits for its context to end.
func Fixed[T any](v T) *File[T] {
	f := &File[T]{}
	f.cur.Store(&v)
	return f
}

// Current is the value of the last good version.
func (f *File[T]) Current() T { return *f.cur.Load() }

// Err says why the file's present content is not in force (it cannot be
// read, or the version there was rejected); nil when it is in force.
func (f *File[T]) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readErr != nil {
		return f.readErr
	}
	return f.parseErr
}

// Reload reads the file now. changed reports that a new version was taken;
// err is set when this call rejected a version, or met a read error other
// than the last one, and then the previous value stays. A version read
// before, or the same read error again, is not parsed, logged or counted
// again: Reload returns false, nil, and Err still reports the problem.
func (f *File[T]) Reload() (changed bool, err error) {
	if f.o.Path == "" { // Fixed
		return false, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.o.Path)
	if err != nil {
		err = fmt.Errorf("%s: %w", f.o.What, err)
		again := f.readErr != nil && f.readErr.Error() == err.Error()
		f.readErr = err
		if again {
			return false, nil
		}
		f.reject(err)
		return false, err
	}
	f.readErr = nil
	if bytes.Equal(data, f.last) {
		return false, nil
	}
	f.last = data
	v, err := f.o.Parse(data)
	if err != nil {
		f.parseErr = fmt.Errorf("%s %s: %w", f.o.What, f.o.Path, err)
		f.reject(f.parseErr)
		return false, f.parseErr
	}
	f.cur.Store(&v)
	f.parseErr = nil
	f.count(true)
	kv := []any{"path", f.o.Path}
	if f.o.Describe != nil {
		kv = append(kv, f.o.Describe(v)...)
	}
	f.o.Log.Info("Reloaded "+f.o.What, kv...)
	return true, nil
}

func (f *File[T]) reject(err error) {
	f.count(false)
	f.o.Log.Error(err, "Invalid "+f.o.What+"; keeping the previous one", "path", f.o.Path)
}

func (f *File[T]) count(ok bool) {
	if f.o.Counted != nil {
		f.o.Counted(ok)
	}
}

// settle is how long Watch waits after the last event of a burst before it
// reads the file. A file written in place (truncated, then written) sends
// several events microseconds apart; reading at the first would see it
// empty or half written, and an empty file can be a valid version (the
// default placement policy).
var settle = 100 * time.Millisecond

// Watch reloads the file once the watch is set up, then after every burst
// of fsnotify events in its directory (once it has been quiet for 100 ms)
// and every poll interval, until ctx ends. When the directory cannot be
// watched it says so in the log and polls only.
func (f *File[T]) Watch(ctx context.Context, poll time.Duration) {
	if f.o.Path == "" { // Fixed
		<-ctx.Done()
		return
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w, err := watchDir(filepath.Dir(f.o.Path)); err != nil {
		f.o.Log.Error(err, "Cannot watch "+f.o.What+"; polling only", "path", f.o.Path, "every", poll)
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	quiet := time.NewTimer(settle)
	quiet.Stop()
	defer quiet.Stop()
	// A change between Load and the watch would otherwise wait for the poll.
	_, _ = f.Reload()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
			} else {
				quiet.Reset(settle)
			}
			continue
		case err, ok := <-errs:
			if !ok {
				errs = nil
			} else {
				f.o.Log.Error(err, "Watching "+f.o.What, "path", f.o.Path)
			}
			continue
		case <-quiet.C:
		case <-t.C:
		}
		_, _ = f.Reload() // logged and counted
	}
}

// watchDir watches dir itself, not a file in it: a ConfigMap update
// replaces the symlink the file resolves through, and a rename over the file
// replaces the inode a file watch would follow.
func watchDir(dir string) (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}
