package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Histogram is a Prometheus histogram's cumulative buckets at one scrape.
type Histogram struct {
	// Bounds are the upper bounds (le), ascending, +Inf last.
	Bounds []float64
	// Counts are cumulative, one per bound.
	Counts []float64
	Sum    float64
	Count  float64
}

// Sub is h minus an earlier scrape of the same histogram: what happened in
// between.
func (h Histogram) Sub(earlier Histogram) Histogram {
	out := Histogram{Bounds: h.Bounds, Counts: slices.Clone(h.Counts), Sum: h.Sum - earlier.Sum, Count: h.Count - earlier.Count}
	if len(earlier.Counts) == len(h.Counts) {
		for i := range out.Counts {
			out.Counts[i] -= earlier.Counts[i]
		}
	}
	return out
}

// Quantile estimates quantile q (0..1) as Prometheus' histogram_quantile
// does: linear interpolation inside the bucket that holds it. A quantile
// in the +Inf bucket is the highest finite bound.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count <= 0 || len(h.Bounds) == 0 {
		return math.NaN()
	}
	rank := q * h.Count
	lower, below := 0.0, 0.0
	for i, b := range h.Bounds {
		c := h.Counts[i]
		if c >= rank {
			if math.IsInf(b, 1) {
				return lower
			}
			if c == below {
				return b
			}
			return lower + (b-lower)*(rank-below)/(c-below)
		}
		lower, below = b, c
	}
	return lower
}

// Mean is Sum/Count.
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	return h.Sum / h.Count
}

// ScrapeHistograms reads the histogram metric from a Prometheus text
// endpoint, one Histogram per value of label (all series when label is "").
func ScrapeHistograms(ctx context.Context, url, metric string, labels ...string) (map[string]Histogram, error) {
	body, err := getMetrics(ctx, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return ParseHistograms(body, metric, labels...)
}

// getMetrics GETs a Prometheus text endpoint; the caller closes the body.
func getMetrics(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return resp.Body, nil
}

// ParseHistograms parses the Prometheus text format with expfmt (see
// ScrapeHistograms): one Histogram per combination of the values of labels
// (joined with spaces), the series that share one summed bucket by bucket.
// A metric that is absent gives an empty map.
func ParseHistograms(r io.Reader, metric string, labels ...string) (map[string]Histogram, error) {
	mf, err := parseFamily(r, metric)
	if err != nil || mf == nil {
		return map[string]Histogram{}, err
	}
	type acc struct {
		buckets    map[float64]float64
		sum, count float64
	}
	accs := map[string]*acc{}
	for _, m := range mf.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			return nil, fmt.Errorf("%s is a %s, not a histogram", metric, mf.GetType())
		}
		k := labelKey(m, labels)
		a := accs[k]
		if a == nil {
			a = &acc{buckets: map[float64]float64{}}
			accs[k] = a
		}
		for _, b := range h.GetBucket() {
			a.buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount()) + b.GetCumulativeCountFloat()
		}
		a.sum += h.GetSampleSum()
		a.count += float64(h.GetSampleCount()) + h.GetSampleCountFloat()
	}
	out := make(map[string]Histogram, len(accs))
	for k, a := range accs {
		h := Histogram{Sum: a.sum, Count: a.count}
		for le := range a.buckets {
			h.Bounds = append(h.Bounds, le)
		}
		slices.Sort(h.Bounds)
		for _, le := range h.Bounds {
			h.Counts = append(h.Counts, a.buckets[le])
		}
		out[k] = h
	}
	return out, nil
}

// parseFamily parses the Prometheus text format and returns the family of
// metric; nil when there is none.
func parseFamily(r io.Reader, metric string) (*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	return mfs[metric], nil
}

// labelKey joins the values of labels on m with spaces ("" for a label m
// does not carry).
func labelKey(m *dto.Metric, labels []string) string {
	key := make([]string, len(labels))
	for _, lp := range m.GetLabel() {
		if i := slices.Index(labels, lp.GetName()); i >= 0 {
			key[i] = lp.GetValue()
		}
	}
	return strings.Join(key, " ")
}

// ScrapeCounters reads a counter (or gauge) from a Prometheus text endpoint,
// summed by the value of label.
func ScrapeCounters(ctx context.Context, url, metric, label string) (map[string]float64, error) {
	body, err := getMetrics(ctx, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return ParseCounters(body, metric, label)
}

// ParseCounters parses a counter, gauge or untyped metric in the
// Prometheus text format with expfmt, summed by the values of labels joined
// with spaces. A metric that is absent gives an empty map.
func ParseCounters(r io.Reader, metric string, labels ...string) (map[string]float64, error) {
	out := map[string]float64{}
	mf, err := parseFamily(r, metric)
	if err != nil || mf == nil {
		return out, err
	}
	for _, m := range mf.GetMetric() {
		var v float64
		switch {
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		default:
			return nil, fmt.Errorf("%s is a %s, not a counter or gauge", metric, mf.GetType())
		}
		out[labelKey(m, labels)] += v
	}
	return out, nil
}
