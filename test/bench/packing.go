package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/mlplane/mlplane/internal/score/sim"
)

// PackingRow is one trace: the policy's result and the baselines.
type PackingRow struct {
	Trace  string     `json:"trace"`
	SVG    string     `json:"svg,omitempty"`
	Report sim.Report `json:"report"`
}

// PackingReport is the result of Packing.
type PackingReport struct {
	Rows []PackingRow `json:"rows"`
}

// Packing runs `extender simulate --output json` on each trace, writing its
// SVG into svgDir (when not empty) as <trace>.svg.
func Packing(ctx context.Context, extenderBin string, traces []string, svgDir string) (*PackingReport, error) {
	rep := &PackingReport{}
	for _, tr := range traces {
		name := strings.TrimSuffix(filepath.Base(tr), filepath.Ext(tr))
		args := []string{"simulate", "--trace", tr, "--output", "json"}
		row := PackingRow{Trace: name}
		if svgDir != "" {
			row.SVG = filepath.Join(svgDir, name+".svg")
			args = append(args, "--svg", row.SVG)
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, extenderBin, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return rep, fmt.Errorf("%s %s: %w: %s", extenderBin, strings.Join(args, " "), err, stderr.String())
		}
		if err := json.Unmarshal(stdout.Bytes(), &row.Report); err != nil {
			return rep, fmt.Errorf("simulate %s: %w", tr, err)
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

// WriteText writes one table: per trace, the policy, whole-gpu and spread.
func (r *PackingReport) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("trace | placement | placed | unplaced | GPUs used | lower bound | used / bound | memory utilization\n")
	for _, row := range r.Rows {
		line := func(name string, res sim.Result) {
			ratio := 0.0
			if res.LowerBoundGPUs > 0 {
				ratio = float64(res.GPUsUsed) / float64(res.LowerBoundGPUs)
			}
			fmt.Fprintf(&b, "%s | %s | %d | %d | %d of %d | %d | %.2f | %.1f%%\n", row.Trace, name,
				res.PodsPlaced, res.PodsUnplaced, res.GPUsUsed, res.GPUsTotal, res.LowerBoundGPUs, ratio, 100*res.MemoryUtilization)
		}
		name := "policy"
		if p := row.Report.Policy; p != nil {
			name = p.NodeStrategy + "/" + p.GPUStrategy
		}
		line(name, row.Report.Result)
		for _, k := range []string{sim.BaselineWholeGPU, sim.BaselineSpread} {
			if res, ok := row.Report.Baselines[k]; ok {
				line(k, res)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
