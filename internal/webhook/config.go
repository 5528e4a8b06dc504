package webhook

import (
	"context"
	"time"

	"github.com/go-logr/logr"

	"github.com/mlplane/mlplane/internal/filereload"
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
// rebuilds it when the file changes, by internal/filereload's rules: an
// invalid new version keeps the previous Mutator, logged ("Invalid
// InjectionConfig; keeping the previous one") and counted once in
// mlplane_webhook_config_reloads_total{result="failure"}; every version
// taken, the first included, counts as result="success".
type ConfigSource struct {
	// PollInterval is how often the file is re-read besides the fsnotify
	// events on its directory (see filereload). Default 10s.
	PollInterval time.Duration

	file *filereload.File[*mutate.Mutator] // filereload.Fixed: the built-in config
}

// NewConfigSource loads the file at path (empty: the built-in default
// config, never reloaded). namespace is the webhook's own namespace.
func NewConfigSource(path, namespace string, metrics *Metrics, log logr.Logger) (*ConfigSource, error) {
	s := &ConfigSource{PollInterval: 10 * time.Second}
	if path == "" {
		m, err := mutate.New(mutate.DefaultConfig(), mutate.Options{Namespace: namespace})
		if err != nil {
			return nil, err
		}
		s.file = filereload.Fixed(m)
		return s, nil
	}
	f, err := filereload.Load(filereload.Options[*mutate.Mutator]{
		Path: path, What: "InjectionConfig", Log: log, Counted: metrics.reloaded,
		Parse: func(data []byte) (*mutate.Mutator, error) {
			cfg, err := mutate.LoadConfig(data)
			if err != nil {
				return nil, err
			}
			return mutate.New(cfg, mutate.Options{Namespace: namespace})
		},
	})
	if err != nil {
		return nil, err
	}
	s.file = f
	return s, nil
}

// Mutator returns the current Mutator.
func (s *ConfigSource) Mutator() *mutate.Mutator { return s.file.Current() }

// Reload re-reads the file now. It reports whether the configuration
// changed; on error the previous configuration stays in force.
func (s *ConfigSource) Reload() (bool, error) { return s.file.Reload() }

// Start watches the file until ctx ends; it implements manager.Runnable.
func (s *ConfigSource) Start(ctx context.Context) error {
	s.file.Watch(ctx, s.PollInterval)
	return nil
}
