package extender

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/mlplane/mlplane/internal/score"
)

// PolicyFile is a PlacerSource read from a PlacementPolicy YAML file and
// reloaded when the file changes (a ConfigMap update included). An invalid
// new version is logged and counted, and the last good policy stays.
type PolicyFile struct {
	path    string
	current atomic.Pointer[score.Placer]
	last    []byte
	metrics *Metrics
	log     logr.Logger
}

var _ PlacerSource = (*PolicyFile)(nil)

// LoadPolicyFile reads the policy at path; an empty path is the built-in
// default policy, never reloaded. The first load must succeed.
func LoadPolicyFile(path string, m *Metrics, log logr.Logger) (*PolicyFile, error) {
	pf := &PolicyFile{path: path, metrics: m, log: log}
	if path == "" {
		p, err := score.NewPlacer(score.DefaultPolicy())
		if err != nil {
			return nil, err
		}
		pf.current.Store(p)
		return pf, nil
	}
	if err := pf.reload(); err != nil {
		return nil, err
	}
	return pf, nil
}

// Placer is the current policy.
func (pf *PolicyFile) Placer() *score.Placer { return pf.current.Load() }

// reload reads the file and swaps the policy if it changed and is valid.
func (pf *PolicyFile) reload() error {
	data, err := os.ReadFile(pf.path)
	if err != nil {
		return fmt.Errorf("reading placement policy: %w", err)
	}
	if pf.last != nil && bytes.Equal(data, pf.last) {
		return nil
	}
	p, err := score.ParsePolicy(data)
	if err == nil {
		var pl *score.Placer
		if pl, err = score.NewPlacer(p); err == nil {
			pf.current.Store(pl)
		}
	}
	pf.last = data
	result := "ok"
	if err != nil {
		result = "invalid"
	}
	if pf.metrics != nil {
		pf.metrics.PolicyReloads.WithLabelValues(result).Inc()
	}
	return err
}

// Watch re-reads the file every interval until ctx ends. Polling, rather
// than inotify, also sees the symlink swap of a mounted ConfigMap.
func (pf *PolicyFile) Watch(ctx context.Context, interval time.Duration) {
	if pf.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			before := pf.Placer()
			if err := pf.reload(); err != nil {
				pf.log.Error(err, "placement policy not reloaded; keeping the previous one", "path", pf.path)
			} else if pf.Placer() != before {
				p := pf.Placer().Policy()
				pf.log.Info("placement policy reloaded", "path", pf.path, "nodeStrategy", p.NodeStrategy, "gpuStrategy", p.GPUStrategy)
			}
		}
	}
}
