package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// LoadOptions configure RunLoad.
type LoadOptions struct {
	// URL is the webhook's admission URL (https://host:port/path).
	URL string
	// Body is the AdmissionReview every request sends.
	Body []byte
	// Clients is the number of concurrent closed-loop clients: each sends
	// its next request when the previous one is answered. Default 1.
	Clients int
	// Duration is how long requests are measured. Default 10s.
	Duration time.Duration
	// Warmup runs before the measurement, results discarded (TLS handshakes,
	// connection pools, the server's buffer pools). Default 1s.
	Warmup time.Duration
	// CAPEM verifies the server certificate; empty skips verification.
	CAPEM []byte
	// HTTP1 forces HTTP/1.1, one keep-alive connection per client. Default
	// false: HTTP/2, all clients multiplexed on Conns connections, as the
	// API server calls webhooks (controller-runtime's server offers only h2
	// by ALPN).
	HTTP1 bool
	// Conns is the number of HTTP/2 connections the clients share
	// round-robin. Default 1.
	Conns int
	// ExpectPatch counts an allowed answer without a JSON patch as an error
	// (so a benchmark of the mlplane webhook measures the mutating path).
	ExpectPatch bool
}

func (o *LoadOptions) setDefaults() {
	if o.Clients < 1 {
		o.Clients = 1
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	} else if o.Warmup == 0 {
		o.Warmup = time.Second
	}
	if o.Conns < 1 {
		o.Conns = 1
	}
}

// LoadResult is one load run. Latencies are in milliseconds.
type LoadResult struct {
	Clients   int     `json:"clients"`
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	RPS       float64 `json:"rps"`
	P50       float64 `json:"p50_ms"`
	P90       float64 `json:"p90_ms"`
	P99       float64 `json:"p99_ms"`
	Max       float64 `json:"max_ms"`
	Mean      float64 `json:"mean_ms"`
	BodyBytes int     `json:"body_bytes"`
	// FirstError is the first error seen, for the report.
	FirstError string `json:"first_error,omitempty"`
}

// String is one line of text.
func (r LoadResult) String() string {
	s := fmt.Sprintf("clients %3d  %8.0f req/s  p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  max %7.2f ms  requests %d  errors %d",
		r.Clients, r.RPS, r.P50, r.P90, r.P99, r.Max, r.Requests, r.Errors)
	if r.FirstError != "" {
		s += "  (" + r.FirstError + ")"
	}
	return s
}

// newTransport is one client connection pool for o.
func newTransport(o *LoadOptions) (*http.Transport, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(o.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, errors.New("no certificate in the CA PEM")
		}
		cfg.RootCAs = pool
	} else {
		cfg.InsecureSkipVerify = true
	}
	t := &http.Transport{
		TLSClientConfig:     cfg,
		MaxIdleConns:        o.Clients + 8,
		MaxIdleConnsPerHost: o.Clients + 8,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if o.HTTP1 {
		cfg.NextProtos = []string{"http/1.1"}
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	} else {
		t.ForceAttemptHTTP2 = true
	}
	return t, nil
}

// RunLoad sends o.Body to o.URL from o.Clients concurrent clients for
// o.Warmup plus o.Duration and reports what the measured part saw. An
// answer counts as an error unless it is HTTP 200 with an allowed
// AdmissionReview (and a patch, with ExpectPatch).
func RunLoad(ctx context.Context, o LoadOptions) (LoadResult, error) {
	o.setDefaults()
	if o.URL == "" || len(o.Body) == 0 {
		return LoadResult{}, errors.New("RunLoad: URL and Body are required")
	}
	clients := make([]*http.Client, o.Conns)
	if o.HTTP1 {
		clients = clients[:1]
	}
	for i := range clients {
		t, err := newTransport(&o)
		if err != nil {
			return LoadResult{}, err
		}
		defer t.CloseIdleConnections()
		clients[i] = &http.Client{Transport: t, Timeout: 30 * time.Second}
	}

	start := time.Now()
	measureFrom := start.Add(o.Warmup)
	end := measureFrom.Add(o.Duration)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()

	type clientStats struct {
		lat      []time.Duration
		errors   int
		firstErr string
	}
	stats := make([]clientStats, o.Clients)
	var wg sync.WaitGroup
	for i := range o.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[i]
			st.lat = make([]time.Duration, 0, 1<<14)
			hc := clients[i%len(clients)]
			buf := make([]byte, 0, 64<<10)
			for ctx.Err() == nil {
				t0 := time.Now()
				var err error
				buf, err = post(ctx, hc, o.URL, o.Body, buf[:0], o.ExpectPatch)
				t1 := time.Now()
				if ctx.Err() != nil && t1.After(end) {
					return // cut off by the deadline: not an answer
				}
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					st.errors++
					if st.firstErr == "" {
						st.firstErr = err.Error()
					}
					continue
				}
				st.lat = append(st.lat, t1.Sub(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	if elapsed > o.Duration {
		elapsed = o.Duration
	}

	var all []time.Duration
	res := LoadResult{Clients: o.Clients, Seconds: elapsed.Seconds(), BodyBytes: len(o.Body)}
	for _, st := range stats {
		all = append(all, st.lat...)
		res.Errors += st.errors
		if res.FirstError == "" {
			res.FirstError = st.firstErr
		}
	}
	res.Requests = len(all)
	res.RPS = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		slices.Sort(all)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		res.P50 = ms(Percentile(all, 0.50))
		res.P90 = ms(Percentile(all, 0.90))
		res.P99 = ms(Percentile(all, 0.99))
		res.Max = ms(all[len(all)-1])
		var sum time.Duration
		for _, d := range all {
			sum += d
		}
		res.Mean = ms(sum / time.Duration(len(all)))
	}
	return res, nil
}

// Percentile is the nearest-rank percentile q (0..1) of sorted.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

var (
	allowedTrue = []byte(`"allowed":true`)
	patchKey    = []byte(`"patch":`)
)

// post sends one AdmissionReview and checks the answer cheaply (without
// decoding it: the client shares the CPUs with the server under test).
func post(ctx context.Context, hc *http.Client, url string, body, buf []byte, expectPatch bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return buf, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return buf, err
	}
	defer resp.Body.Close()
	b := bytes.NewBuffer(buf)
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return b.Bytes(), err
	}
	buf = b.Bytes()
	if resp.StatusCode != http.StatusOK {
		return buf, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, buf)
	}
	if !bytes.Contains(buf, allowedTrue) {
		return buf, fmt.Errorf("not allowed: %.300s", buf)
	}
	if expectPatch && !bytes.Contains(buf, patchKey) {
		return buf, fmt.Errorf("allowed without a patch: %.300s", buf)
	}
	return buf, nil
}
