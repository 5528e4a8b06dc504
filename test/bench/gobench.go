package bench

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// GoBench is the median of each `go test -bench -count N` benchmark.
type GoBench struct {
	Rows []GoBenchRow `json:"rows"`
}

// GoBenchRow is one benchmark's medians over its runs.
type GoBenchRow struct {
	Name     string  `json:"name"`
	Runs     int     `json:"runs"`
	NsPerOp  float64 `json:"ns_per_op"`
	BPerOp   float64 `json:"bytes_per_op"`
	AllocsOp float64 `json:"allocs_per_op"`
	// CPUNsOp is the process CPU time per op, where the benchmark reports it.
	CPUNsOp float64 `json:"cpu_ns_per_op,omitempty"`
	// MinNs and MaxNs show the spread of ns/op.
	MinNs float64 `json:"min_ns_per_op"`
	MaxNs float64 `json:"max_ns_per_op"`
}

// ParseGoBench reads `go test -bench` output (the lines starting with
// "Benchmark"), keeping the order of first appearance.
func ParseGoBench(r io.Reader) (*GoBench, error) {
	type acc struct{ ns, b, allocs, cpu []float64 }
	byName := map[string]*acc{}
	var order []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		a := byName[f[0]]
		if a == nil {
			a = &acc{}
			byName[f[0]] = a
			order = append(order, f[0])
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				a.ns = append(a.ns, v)
			case "B/op":
				a.b = append(a.b, v)
			case "allocs/op":
				a.allocs = append(a.allocs, v)
			case "cpu-ns/op":
				a.cpu = append(a.cpu, v)
			}
		}
	}
	out := &GoBench{}
	for _, n := range order {
		a := byName[n]
		if len(a.ns) == 0 {
			continue
		}
		row := GoBenchRow{Name: n, Runs: len(a.ns), NsPerOp: median(a.ns), BPerOp: median(a.b), AllocsOp: median(a.allocs), CPUNsOp: median(a.cpu), MinNs: a.ns[0], MaxNs: a.ns[0]}
		for _, v := range a.ns {
			row.MinNs, row.MaxNs = min(row.MinNs, v), max(row.MaxNs, v)
		}
		out.Rows = append(out.Rows, row)
	}
	return out, sc.Err()
}

// WriteText writes one line per benchmark.
func (g *GoBench) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("benchmark | runs | median µs/op | min..max µs/op | median CPU µs/op | B/op | allocs/op\n")
	for _, r := range g.Rows {
		cpu := "-"
		if r.CPUNsOp > 0 {
			cpu = fmt.Sprintf("%.1f", r.CPUNsOp/1e3)
		}
		fmt.Fprintf(&b, "%s | %d | %.1f | %.1f..%.1f | %s | %.0f | %.0f\n", r.Name, r.Runs, r.NsPerOp/1e3, r.MinNs/1e3, r.MaxNs/1e3, cpu, r.BPerOp, r.AllocsOp)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
