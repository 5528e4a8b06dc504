package gpu

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Backend names accepted by --backend.
const (
	BackendNVML = "nvml"
	BackendFake = "fake"
	// BackendNone is what an nvml backend becomes when NVML is unavailable.
	BackendNone = "none"
)

// OpenBackend opens the named backend; openNVML is nvmlgpu.Open (passed in
// so that this package does not link NVML). When NVML is unavailable it
// returns None, the name "none" and the reason, and no error: a node
// without GPUs is not a failure, and the agent must not crash-loop on it.
func OpenBackend(name, fakeSpec, nodeName string, openNVML func() (Backend, error), log logr.Logger) (b Backend, actual, reason string, err error) {
	switch name {
	case BackendNVML:
		b, err := openNVML()
		if errors.Is(err, ErrNoNVML) {
			return None, BackendNone, err.Error(), nil
		}
		if err != nil {
			return nil, "", "", err
		}
		return b, BackendNVML, "", nil
	case BackendFake:
		if fakeSpec == "" {
			return nil, "", "", errors.New("--backend fake needs --fake-spec (e.g. 8x80Gi, or a YAML file)")
		}
		f, err := NewFake(nodeName, fakeSpec, log)
		if err != nil {
			return nil, "", "", err
		}
		return f, BackendFake, "", nil
	}
	return nil, "", "", fmt.Errorf("unknown backend %q: want %s or %s", name, BackendNVML, BackendFake)
}

// Registry returns a Prometheus registry with the Go and process collectors.
func Registry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Serve runs the metrics (/metrics) and health (/healthz, /readyz) servers
// until ctx ends, then shuts them down with a deadline. An empty address
// disables a server.
func Serve(ctx context.Context, metricsAddr, healthAddr string, reg *prometheus.Registry, a *Agent) error {
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	healthMux := http.NewServeMux()
	check := func(f func() error) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if err := f(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		}
	}
	healthMux.Handle("/healthz", check(a.Healthy))
	healthMux.Handle("/readyz", check(a.Ready))

	errc := make(chan error, 2)
	var servers []*http.Server
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{metricsAddr, metricsMux}, {healthAddr, healthMux}} {
		if s.addr == "" {
			continue
		}
		srv := &http.Server{Addr: s.addr, Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving on %s: %w", srv.Addr, err)
			}
		}()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(sctx)
	}
	return nil
}
