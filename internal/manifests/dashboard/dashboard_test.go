package dashboard

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/gpu"
	"github.com/mlplane/mlplane/internal/score/extender"
	"github.com/mlplane/mlplane/internal/webhook"
)

// describedNames is a prometheus.Registerer that only records the names of
// the metrics registered with it.
type describedNames struct{ names sets.Set[string] }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describedNames) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names.Insert(m[1])
		}
	}
	return nil
}

func (d *describedNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describedNames) Unregister(prometheus.Collector) bool { return true }

// exported is every metric name the three binaries register, from their
// own constructors.
func exported(t *testing.T) sets.Set[string] {
	t.Helper()
	reg := &describedNames{names: sets.New[string]()}
	webhook.NewMetrics(reg)
	if err := extender.NewMetrics().Register(reg); err != nil {
		t.Fatal(err)
	}
	backend, err := gpu.NewFake("n", "1x80Gi", logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	// A client the agent is never run with: NewAgent only registers metrics.
	client, err := gpu.NewRESTAPI(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gpu.NewAgent(gpu.Options{NodeName: "n", Client: client, Backend: backend, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if reg.names.Len() == 0 {
		t.Fatal("no metric names collected")
	}
	return reg.names
}

var metricRef = regexp.MustCompile(`\bmlplane_[a-z_]+`)

// The Grafana dashboard queries only metrics the components really export
// (a histogram's _bucket, _sum and _count series count as the histogram).
func TestDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "prometheus", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	have := exported(t)
	used := sets.New[string]()
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, ref := range metricRef.FindAllString(tg.Expr, -1) {
				name := ref
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base := strings.TrimSuffix(ref, suffix); base != ref && have.Has(base) {
						name = base
					}
				}
				used.Insert(name)
				if !have.Has(name) {
					t.Errorf("panel %q queries %s, which no component exports", p.Title, ref)
				}
			}
		}
	}
	// The panels the issue asks for are there: GPU memory, pods per GPU,
	// packing efficiency, admission and extender latency.
	for _, want := range []string{"mlplane_gpu_memory_used_bytes", "mlplane_gpu_pod_memory_used_bytes",
		"mlplane_gpu_memory_total_bytes", "mlplane_webhook_request_duration_seconds", "mlplane_extender_request_duration_seconds"} {
		if !used.Has(want) {
			t.Errorf("the dashboard does not use %s", want)
		}
	}
	t.Logf("dashboard uses %s", strings.Join(sets.List(used), ", ")) // sets.List sorts
}
