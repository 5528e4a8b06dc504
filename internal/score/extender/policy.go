package extender

import (
	"context"
	"time"

	"github.com/go-logr/logr"

	"github.com/mlplane/mlplane/internal/filereload"
	"github.com/mlplane/mlplane/internal/score"
)

// PolicyFile is a PlacerSource read from a PlacementPolicy YAML file and
// reloaded when it changes (a mounted ConfigMap's symlink swap included), by
// internal/filereload's rules: an invalid new version is logged ("Invalid
// placement policy; keeping the previous one") and counted once in
// mlplane_extender_policy_reloads_total{result="invalid"}, and the last good
// policy stays; every version taken, the first included, counts as
// result="ok".
type PolicyFile struct {
	file *filereload.File[*score.Placer] // filereload.Fixed: the built-in policy
}

var _ PlacerSource = (*PolicyFile)(nil)

// LoadPolicyFile reads the policy at path; an empty path is the built-in
// default policy, never reloaded. The first load must succeed. m may be nil
// (nothing counted).
func LoadPolicyFile(path string, m *Metrics, log logr.Logger) (*PolicyFile, error) {
	if path == "" {
		p, err := score.NewPlacer(score.DefaultPolicy())
		if err != nil {
			return nil, err
		}
		return &PolicyFile{file: filereload.Fixed(p)}, nil
	}
	o := filereload.Options[*score.Placer]{
		Path: path, What: "placement policy", Log: log,
		Parse: func(data []byte) (*score.Placer, error) {
			p, err := score.ParsePolicy(data)
			if err != nil {
				return nil, err
			}
			return score.NewPlacer(p)
		},
		Describe: func(pl *score.Placer) []any {
			p := pl.Policy()
			return []any{"nodeStrategy", p.NodeStrategy, "gpuStrategy", p.GPUStrategy}
		},
	}
	if m != nil {
		o.Counted = func(ok bool) {
			result := "ok"
			if !ok {
				result = "invalid"
			}
			m.PolicyReloads.WithLabelValues(result).Inc()
		}
	}
	f, err := filereload.Load(o)
	if err != nil {
		return nil, err
	}
	return &PolicyFile{file: f}, nil
}

// Placer is the current policy.
func (pf *PolicyFile) Placer() *score.Placer { return pf.file.Current() }

// Watch keeps the policy current until ctx ends: fsnotify events on the
// file's directory, and a re-read every interval (filereload.File.Watch);
// with the built-in policy it only waits for ctx to end.
func (pf *PolicyFile) Watch(ctx context.Context, interval time.Duration) {
	pf.file.Watch(ctx, interval)
}
