package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
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

// ParseHistograms parses the Prometheus text format (see ScrapeHistograms):
// one Histogram per combination of the values of labels (joined with
// spaces), the series that share one summed bucket by bucket.
func ParseHistograms(r io.Reader, metric string, labels ...string) (map[string]Histogram, error) {
	type acc struct {
		buckets    map[float64]float64
		sum, count float64
	}
	accs := map[string]*acc{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	key := make([]string, len(labels))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"_") {
			continue
		}
		name, ls, value, ok := splitSample(line)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		for i, l := range labels {
			key[i] = ls[l]
		}
		k := strings.Join(key, " ")
		a := accs[k]
		if a == nil {
			a = &acc{buckets: map[float64]float64{}}
			accs[k] = a
		}
		switch name {
		case metric + "_bucket":
			le, err := strconv.ParseFloat(ls["le"], 64)
			if err != nil {
				return nil, fmt.Errorf("%q: le: %w", line, err)
			}
			a.buckets[le] += v
		case metric + "_sum":
			a.sum += v
		case metric + "_count":
			a.count += v
		}
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
	return out, sc.Err()
}

// splitSample splits `name{a="b",c="d"} value [timestamp]`.
func splitSample(line string) (name string, labels map[string]string, value string, ok bool) {
	labels = map[string]string{}
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", nil, "", false
		}
		name = line[:i]
		for _, kv := range strings.Split(line[i+1:j], ",") {
			k, v, found := strings.Cut(kv, "=")
			if found {
				labels[strings.TrimSpace(k)] = strings.Trim(v, `"`)
			}
		}
		rest = line[j+1:]
	} else {
		f := strings.Fields(line)
		if len(f) < 2 {
			return "", nil, "", false
		}
		name, rest = f[0], strings.Join(f[1:], " ")
	}
	f := strings.Fields(rest)
	if len(f) < 1 {
		return "", nil, "", false
	}
	return name, labels, f[0], true
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

// ParseCounters parses a counter (or gauge) in the Prometheus text format,
// summed by the values of labels joined with spaces.
func ParseCounters(r io.Reader, metric string, labels ...string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	key := make([]string, len(labels))
	for sc.Scan() {
		name, ls, value, ok := splitSample(sc.Text())
		if !ok || name != metric {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		for i, l := range labels {
			key[i] = ls[l]
		}
		out[strings.Join(key, " ")] += v
	}
	return out, sc.Err()
}
