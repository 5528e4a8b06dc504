package bench

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const sampleMetrics = `# HELP mlplane_extender_request_duration_seconds Time to answer.
# TYPE mlplane_extender_request_duration_seconds histogram
mlplane_extender_request_duration_seconds_bucket{verb="filter",le="0.001"} 50
mlplane_extender_request_duration_seconds_bucket{verb="filter",le="0.005"} 90
mlplane_extender_request_duration_seconds_bucket{verb="filter",le="0.01"} 100
mlplane_extender_request_duration_seconds_bucket{verb="filter",le="+Inf"} 100
mlplane_extender_request_duration_seconds_sum{verb="filter"} 0.2
mlplane_extender_request_duration_seconds_count{verb="filter"} 100
mlplane_extender_request_duration_seconds_bucket{verb="bind",le="0.001"} 0
mlplane_extender_request_duration_seconds_bucket{verb="bind",le="0.005"} 0
mlplane_extender_request_duration_seconds_bucket{verb="bind",le="0.01"} 1
mlplane_extender_request_duration_seconds_bucket{verb="bind",le="+Inf"} 2
mlplane_extender_request_duration_seconds_sum{verb="bind"} 3
mlplane_extender_request_duration_seconds_count{verb="bind"} 2
`

func TestHistogramQuantile(t *testing.T) {
	hs, err := ParseHistograms(strings.NewReader(sampleMetrics), "mlplane_extender_request_duration_seconds", "verb")
	if err != nil {
		t.Fatal(err)
	}
	f := hs["filter"]
	for _, c := range []struct{ q, want float64 }{
		{0.5, 0.001},  // rank 50: the top of the first bucket
		{0.25, .0005}, // rank 25: halfway through 0..0.001
		{0.7, 0.003},  // rank 70: 0.001 + (0.005-0.001)*(70-50)/(90-50)
		{0.95, 0.0075},
	} {
		if got := f.Quantile(c.q); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("filter q%v = %v, want %v", c.q, got, c.want)
		}
	}
	// Half the binds are in +Inf: the quantile is the last finite bound.
	if got := hs["bind"].Quantile(0.99); got != 0.01 {
		t.Errorf("bind q0.99 = %v, want 0.01", got)
	}
	later := f
	later.Counts = []float64{60, 110, 130, 130}
	later.Count, later.Sum = 130, 0.5
	d := later.Sub(f) // 30 calls, cumulative 10, 20, 30: rank 15 is halfway through (0.001, 0.005]
	if d.Count != 30 || math.Abs(d.Quantile(0.5)-0.003) > 1e-12 || math.Abs(d.Mean()-0.01) > 1e-12 {
		t.Errorf("difference %+v: q0.5 %v mean %v", d, d.Quantile(0.5), d.Mean())
	}
}

// TestHistogramAddWithin: two webhooks' series add bucket by bucket, and
// the share within a bound is read from its bucket.
func TestHistogramAddWithin(t *testing.T) {
	hs, err := ParseHistograms(strings.NewReader(sampleMetrics), "mlplane_extender_request_duration_seconds", "verb")
	if err != nil {
		t.Fatal(err)
	}
	sum := Histogram{}.Add(hs["filter"]).Add(hs["bind"])
	if sum.Count != 102 || sum.Sum != 3.2 || !slices.Equal(sum.Counts, []float64{50, 90, 101, 102}) {
		t.Errorf("sum %+v", sum)
	}
	if got := fractionWithin(sum, 0.005); got != 90.0/102 {
		t.Errorf("within 0.005: %v, want 90/102", got)
	}
	if got := fractionWithin(sum, 0.002); got != 0 {
		t.Errorf("within 0.002, not a bound: %v, want 0", got)
	}
	if got := fractionWithin(Histogram{}, 0.005); got != 0 {
		t.Errorf("within, empty: %v, want 0", got)
	}
}

func TestPercentile(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 100; i++ {
		xs = append(xs, time.Duration(i))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.9, 90}, {0.99, 99}, {1, 100}, {0, 1}} {
		if got := Percentile(xs, c.q); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkX/n=1-2   	    1000	      2000 ns/op	     100 B/op	       3 allocs/op
BenchmarkX/n=1-2   	    1000	      1000 ns/op	     100 B/op	       3 allocs/op
BenchmarkX/n=1-2   	    1000	      3000 ns/op	     120 B/op	       3 allocs/op
BenchmarkY-2   	    10	      5 ns/op	  1.5 MB/s
PASS`
	g, err := ParseGoBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Rows) != 2 {
		t.Fatalf("rows %+v", g.Rows)
	}
	if r := g.Rows[0]; r.Name != "BenchmarkX/n=1-2" || r.Runs != 3 || r.NsPerOp != 2000 || r.MinNs != 1000 || r.MaxNs != 3000 || r.BPerOp != 100 {
		t.Errorf("row %+v", r)
	}
}

func TestParseCounters(t *testing.T) {
	const text = `# TYPE mlplane_extender_binds_total counter
mlplane_extender_binds_total{result="bound",node="a"} 3
mlplane_extender_binds_total{result="bound",node="b"} 4
mlplane_extender_binds_total{result="error",node="a"} 1
`
	got, err := ParseCounters(strings.NewReader(text), "mlplane_extender_binds_total", "result")
	if err != nil {
		t.Fatal(err)
	}
	// bound: 3+4 summed over nodes.
	if d := cmp.Diff(map[string]float64{"bound": 7, "error": 1}, got); d != "" {
		t.Errorf("counters (-want +got):\n%s", d)
	}
	if got, err := ParseCounters(strings.NewReader(text), "absent_total"); err != nil || len(got) != 0 {
		t.Errorf("absent metric: %v, %v; want an empty map", got, err)
	}
	if _, err := ParseCounters(strings.NewReader(sampleMetrics), "mlplane_extender_request_duration_seconds"); err == nil ||
		err.Error() != "mlplane_extender_request_duration_seconds is a HISTOGRAM, not a counter or gauge" {
		t.Errorf("histogram as counter: %v", err)
	}
	if _, err := ParseHistograms(strings.NewReader(text), "mlplane_extender_binds_total"); err == nil ||
		err.Error() != "mlplane_extender_binds_total is a COUNTER, not a histogram" {
		t.Errorf("counter as histogram: %v", err)
	}
	if _, err := ParseCounters(strings.NewReader("x{a=\"b\" 1\n"), "x"); err == nil {
		t.Error("malformed text accepted")
	}
}
