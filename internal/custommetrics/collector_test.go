package custommetrics

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata/metadatalister"
	"k8s.io/client-go/tools/cache"

	"github.com/mlplane/mlplane/internal/api"
)

// agent is a stand-in node agent serving body (text format) on /metrics.
type agent struct {
	*httptest.Server
	mu     sync.Mutex
	body   string
	status int
}

func newAgent(t *testing.T, body string) *agent {
	a := &agent{body: body, status: http.StatusOK}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		w.Header().Set("Content-Type", string(textFormat))
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *agent) set(status int, body string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.body = status, body
}

func (a *agent) addr() string { return strings.TrimPrefix(a.URL, "http://") }

func utilLine(ns, pod, uid string, ratio string) string {
	return `mlplane_gpu_pod_utilization_ratio{gpu="0",namespace="` + ns + `",node="n",pod="` + pod + `",pod_uid="` + uid + `",source="process",uuid="GPU-a"} ` + ratio + "\n"
}

// logs collects a logger's lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{})
}

func (l *logs) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			n++
		}
	}
	return n
}

func TestCollectorRound(t *testing.T) {
	fixture, err := os.ReadFile("testdata/agent.txt")
	if err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, string(fixture))
	b := newAgent(t, utilLine("ml", "small-0", "uid-small-0", "0.25"))
	targets := []Target{{Node: "node-a", Addr: a.addr()}, {Node: "node-b", Addr: b.addr()}}
	store := NewStore()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var log logs
	c := NewCollector(CollectorOptions{Targets: func() []Target { return targets }, Store: store,
		Now: func() time.Time { return now }, Logger: log.logger()})
	ctx := context.Background()

	c.Collect(ctx)
	if nodes, pods := store.Counts(now); nodes != 2 || pods != 3 {
		t.Fatalf("after one round: %d nodes, %d pods; want 2, 3", nodes, pods)
	}
	if p, at, ok := store.Pod("uid-llm-0", now); !ok || !at.Equal(now) || p.Utilization != 0.71 {
		t.Fatalf("uid-llm-0 = %+v at %v, %v", p, at, ok)
	}

	// node-b's agent fails: its figures stay, with their old time, and the
	// failure is logged once, not every round.
	b.set(http.StatusInternalServerError, "boom")
	for range 3 {
		now = now.Add(15 * time.Second)
		c.Collect(ctx)
	}
	if _, at, ok := store.Pod("uid-small-0", time.Time{}); !ok || !at.Equal(now.Add(-45*time.Second)) {
		t.Fatalf("uid-small-0 after failures: at %v, %v; want kept from the last success", at, ok)
	}
	if _, _, ok := store.Pod("uid-small-0", now.Add(-MaxAge(DefaultInterval))); ok {
		t.Fatal("figures 45s old are served with a 15s interval")
	}
	if n := log.count("scraping a node agent failed"); n != 1 {
		t.Errorf("failure logged %d times, want once: %q", n, log.lines)
	}
	b.set(http.StatusOK, utilLine("ml", "small-0", "uid-small-0", "0.5"))
	c.Collect(ctx)
	if n := log.count("scraping a node agent works again"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
	if p, _, ok := store.Pod("uid-small-0", now); !ok || p.Utilization != 0.5 {
		t.Fatalf("uid-small-0 after recovery = %+v, %v", p, ok)
	}

	// A series node-b's agent serves without a pod_uid is left out, logged
	// once however many rounds serve it, and the rest is kept.
	b.set(http.StatusOK, utilLine("ml", "small-0", "uid-small-0", "0.75")+
		`mlplane_gpu_pod_utilization_ratio{gpu="1",namespace="ml",pod="broken"} 0.5`+"\n")
	for range 2 {
		c.Collect(ctx)
	}
	if p, _, ok := store.Pod("uid-small-0", now); !ok || p.Utilization != 0.75 {
		t.Fatalf("uid-small-0 beside a series left out = %+v, %v", p, ok)
	}
	if n := log.count(`"skipped"="1 series, first mlplane_gpu_pod_utilization_ratio{gpu=\"1\"}: no pod_uid label"`); n != 1 {
		t.Errorf("the series left out was logged %d times, want once: %q", n, log.lines)
	}

	// node-a is no longer a target (Node deleted): its pods go at once.
	targets = targets[1:]
	c.Collect(ctx)
	if _, _, ok := store.Pod("uid-llm-0", time.Time{}); ok {
		t.Fatal("pods of a node that is no longer a target are kept")
	}
	if c.Rounds() != 8 {
		t.Errorf("Rounds() = %d, want 8", c.Rounds())
	}
}

func TestScrapeErrors(t *testing.T) {
	// A port nothing listens on: bind one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	bad := newAgent(t, "")
	bad.set(http.StatusForbidden, "no")
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(slow.Close)

	c := NewCollector(CollectorOptions{Targets: func() []Target { return nil }, Store: NewStore(), Timeout: 200 * time.Millisecond})
	for _, tc := range []struct {
		addr, want string
	}{
		{closed, "connect: connection refused"},
		{bad.addr(), "GET http://" + bad.addr() + "/metrics: 403 Forbidden"},
		{strings.TrimPrefix(slow.URL, "http://"), "context deadline exceeded"},
	} {
		_, _, err := c.Scrape(context.Background(), Target{Node: "n", Addr: tc.addr})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Scrape(%s) error = %v, want it to contain %q", tc.addr, err, tc.want)
		}
	}
}

// lister is a metadata lister of gvr holding objs, as an informer's.
func lister(t *testing.T, gvr schema.GroupVersionResource, objs ...*metav1.PartialObjectMetadata) metadatalister.Lister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		if err := idx.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return metadatalister.New(idx, gvr)
}

func TestNodeTargets(t *testing.T) {
	node := func(name string, ann map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	}
	const key = api.NodeAnnotationAgentMetrics
	var log logs
	list := NodeTargets(lister(t, nodesGVR,
		node("a", map[string]string{key: "10.0.0.1:8080"}),
		node("b", map[string]string{key: "[fd00::1]:8080"}),
		node("no-agent", nil),
		node("bad-port", map[string]string{key: "10.0.0.2:http"}),
		node("no-port", map[string]string{key: "10.0.0.3"}),
	), key, log.logger())
	for range 2 {
		got := map[string]string{}
		for _, tg := range list() {
			got[tg.Node] = tg.Addr
		}
		if len(got) != 2 || got["a"] != "10.0.0.1:8080" || got["b"] != "[fd00::1]:8080" {
			t.Fatalf("targets = %v", got)
		}
	}
	var buf bytes.Buffer
	for _, l := range log.lines {
		buf.WriteString(l + "\n")
	}
	if n := log.count("not host:port"); n != 2 {
		t.Errorf("malformed addresses logged %d times over two rounds, want 2 (once each):\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), `"err"="port \"http\" is not a number from 1 to 65535"`) ||
		!strings.Contains(buf.String(), `"err"="address 10.0.0.3: missing port in address"`) {
		t.Errorf("log lacks the reasons:\n%s", buf.String())
	}
}
