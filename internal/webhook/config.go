package webhook

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

	"github.com/mlplane/mlplane/internal/mutate"
)

// MutatorSource gives the Mutator of the current configuration.
type MutatorSource interface {
	Mutator() *mutate.Mutator
}

// MutatorFunc adapts a function to MutatorSource.
type MutatorFunc func() *mutate.Mutator

// Mutator calls f.
func (f MutatorFunc) Mutator() *mutate.Mutator { return f() }

var (
	_ MutatorSource = MutatorFunc(nil)
	_ MutatorSource = (*ConfigSource)(nil)
)

// ConfigSource holds the Mutator built from an InjectionConfig file and
// rebuilds it when the file changes. An invalid new file keeps the previous
// Mutator: the failure is logged and counted in
// mlplane_webhook_config_reloads_total{result="failure"}.
type ConfigSource struct {
	path      string
	namespace string
	metrics   *Metrics
	log       logr.Logger
	// PollInterval is how often the file is re-read even without a file
	// system event (ConfigMap volumes update through symlink swaps that some
	// file systems do not report). Default 10s.
	PollInterval time.Duration

	cur  atomic.Pointer[mutate.Mutator]
	mu   sync.Mutex
	last []byte
}

// NewConfigSource loads the file at path (empty: the built-in default
// config, never reloaded). namespace is the webhook's own namespace.
func NewConfigSource(path, namespace string, metrics *Metrics, log logr.Logger) (*ConfigSource, error) {
	s := &ConfigSource{path: path, namespace: namespace, metrics: metrics, log: log, PollInterval: 10 * time.Second}
	if path == "" {
		m, err := mutate.New(mutate.DefaultConfig(), mutate.Options{Namespace: namespace})
		if err != nil {
			return nil, err
		}
		s.cur.Store(m)
		return s, nil
	}
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Mutator returns the current Mutator.
func (s *ConfigSource) Mutator() *mutate.Mutator { return s.cur.Load() }

// load reads the file and, if it changed, swaps in a new Mutator.
func (s *ConfigSource) load() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", s.path, err)
	}
	if s.last != nil && bytes.Equal(data, s.last) {
		return false, nil
	}
	cfg, err := mutate.LoadConfig(data)
	if err != nil {
		return false, fmt.Errorf("%s: %w", s.path, err)
	}
	m, err := mutate.New(cfg, mutate.Options{Namespace: s.namespace})
	if err != nil {
		return false, fmt.Errorf("%s: %w", s.path, err)
	}
	s.cur.Store(m)
	s.last = data
	return true, nil
}

// Reload re-reads the file now. It reports whether the configuration
// changed; on error the previous configuration stays in force.
func (s *ConfigSource) Reload() (bool, error) {
	if s.path == "" {
		return false, nil
	}
	changed, err := s.load()
	switch {
	case err != nil:
		s.metrics.reloaded(false)
		s.log.Error(err, "Invalid InjectionConfig; keeping the previous configuration", "path", s.path)
	case changed:
		s.metrics.reloaded(true)
		s.log.Info("Reloaded InjectionConfig", "path", s.path)
	}
	return changed, err
}

// Start watches the file until ctx ends; it implements manager.Runnable.
func (s *ConfigSource) Start(ctx context.Context) error {
	if s.path == "" {
		<-ctx.Done()
		return nil
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Error(err, "Cannot watch the InjectionConfig; polling only", "path", s.path)
	} else {
		defer w.Close()
		// Watch the directory: a ConfigMap update replaces a symlink.
		if err := w.Add(filepath.Dir(s.path)); err != nil {
			s.log.Error(err, "Cannot watch the InjectionConfig; polling only", "path", s.path)
		}
		events, errs = w.Events, w.Errors
	}
	tick := time.NewTicker(s.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
		case err := <-errs:
			s.log.Error(err, "Watching the InjectionConfig")
			continue
		case <-tick.C:
		}
		_, _ = s.Reload() // logged and counted
	}
}
