package extender

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
)

// server is one Serve running on loopback ports.
type server struct {
	addrs  map[string]string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// freeAddr is a loopback address with a port free a moment ago: the
// manager opens the health and metrics listeners itself, from an address.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer runs Serve on free loopback ports, once its health address
// answers.
func startServer(t *testing.T, o ServerOptions) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o.Addr, o.HealthAddr, o.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	s := &server{addrs: map[string]string{"addr": o.Addr, "health": o.HealthAddr, "metrics": o.MetricsAddr, "pprof": o.PprofAddr}, cancel: cancel, done: make(chan error, 1)}
	o.Logger = logr.Discard()
	go func() { s.done <- Serve(ctx, o) }()
	waitFor(t, "the health address", func() bool {
		select {
		case err := <-s.done:
			t.Fatalf("Serve ended: %v", err)
		default:
		}
		code, _ := s.get("/healthz")
		return code == http.StatusOK
	})
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *server) stop() error {
	s.once.Do(func() {
		s.cancel()
		s.err = <-s.done
	})
	return s.err
}

func (s *server) get(path string) (int, string) {
	addr := s.addrs["health"]
	switch {
	case path == "/metrics" || path == "/leaderz":
		addr = s.addrs["metrics"]
	case strings.HasPrefix(path, "/debug/pprof/"):
		// Off: asked of the metrics address, which does not serve it.
		if addr = s.addrs["pprof"]; addr == "" {
			addr = s.addrs["metrics"]
		}
	}
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds (no fixed sleeps).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestServeHealthMetricsAndReload(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(gpuNode("n", 1, 80), agentLease("n", time.Now()))
	s := startServer(t, ServerOptions{Client: client, PolicyPath: policy, PolicyPollInterval: 20 * time.Millisecond})
	if code, _ := s.get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz %d", code)
	}
	waitFor(t, "readyz", func() bool { code, _ := s.get("/readyz"); return code == http.StatusOK })

	// A filter call shows up in the metrics.
	resp, err := http.Post("http://"+s.addrs["addr"]+PathFilter, "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed filter: %d", resp.StatusCode)
	}
	_, metrics := s.get("/metrics")
	// The Go and process metrics are served beside the extender's.
	for _, m := range []string{`mlplane_extender_request_duration_seconds_count{verb="filter"} 1`, `mlplane_extender_bad_requests_total{verb="filter"} 1`, `mlplane_extender_policy_reloads_total{result="ok"} 1`, "go_goroutines ", "process_resident_memory_bytes "} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}

	// An invalid policy is counted and ignored; a valid one is taken.
	if err := os.WriteFile(policy, []byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\nnodeStrategy: fast\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "invalid reload counted", func() bool {
		_, m := s.get("/metrics")
		return strings.Contains(m, `mlplane_extender_policy_reloads_total{result="invalid"} 1`)
	})
	if err := os.WriteFile(policy, []byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\nnodeStrategy: spread\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "valid reload counted", func() bool {
		_, m := s.get("/metrics")
		return strings.Contains(m, `mlplane_extender_policy_reloads_total{result="ok"} 2`)
	})
	if err := s.stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
}

// TestProfiling: pprof is served (on its own address) only when asked.
func TestProfiling(t *testing.T) {
	for _, on := range []bool{false, true} {
		o := ServerOptions{Client: fake.NewClientset()}
		if on {
			o.PprofAddr = freeAddr(t)
		}
		s := startServer(t, o)
		code, body := s.get("/debug/pprof/cmdline")
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; code != want {
			t.Errorf("profiling %v: /debug/pprof/cmdline answered %d, want %d", on, code, want)
		}
		if on && !strings.Contains(body, "extender.test") {
			t.Errorf("cmdline %q does not name the test binary", body)
		}
		_ = s.stop()
	}
}

func TestPolicyFileKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	_ = os.WriteFile(path, []byte("apiVersion: mlplane.io/v1alpha1\nkind: PlacementPolicy\ngpuStrategy: spread\n"), 0o644)
	pf, err := LoadPolicyFile(path, NewMetrics(), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(path, []byte("kind: Nope\n"), 0o644)
	if _, err := pf.file.Reload(); err == nil {
		t.Fatal("invalid policy accepted")
	}
	if got := pf.Placer().Policy().GPUStrategy; got != score.Spread {
		t.Fatalf("policy after a bad reload: %s", got)
	}
	if _, err := LoadPolicyFile(filepath.Join(dir, "missing.yaml"), nil, logr.Discard()); err == nil {
		t.Fatal("missing policy file accepted at start")
	}
}

// TestLeaderElection runs two replicas against one API server: both are
// ready once synced, exactly one leads (/leaderz) and carries
// api.LabelExtenderLeader on its pod, which both pods had at start (as a
// restarted former leader's would); when the leader stops, the other takes
// over and labels its own pod.
func TestLeaderElection(t *testing.T) {
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: api.DefaultNamespace,
			Labels: map[string]string{"app": "x", api.LabelExtenderLeader: "true"}}}
	}
	client := fake.NewClientset(gpuNode("n", 1, 80), agentLease("n", time.Now()), pod("pod-a"), pod("pod-b"))
	// Two replicas in one process: a metrics registry each.
	a := startServer(t, ServerOptions{Client: client, LeaderElect: true, Identity: "a", PodNamespace: api.DefaultNamespace, PodName: "pod-a", Registry: prometheus.NewRegistry()})
	b := startServer(t, ServerOptions{Client: client, LeaderElect: true, Identity: "b", PodNamespace: api.DefaultNamespace, PodName: "pod-b", Registry: prometheus.NewRegistry()})
	leads := func(s *server) bool { code, _ := s.get("/leaderz"); return code == http.StatusOK }
	labelled := func(name string) bool {
		p, err := client.CoreV1().Pods(api.DefaultNamespace).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && p.Labels[api.LabelExtenderLeader] == "true"
	}
	waitFor(t, "a leader", func() bool { return leads(a) || leads(b) })
	leader, follower, leaderPod, followerPod := a, b, "pod-a", "pod-b"
	if leads(b) {
		leader, follower, leaderPod, followerPod = b, a, "pod-b", "pod-a"
	}
	if leads(follower) {
		t.Fatal("both replicas lead")
	}
	if _, body := follower.get("/leaderz"); !strings.Contains(body, "not the leader") {
		t.Fatalf("follower leaderz: %q", body)
	}
	waitFor(t, "both ready", func() bool {
		ca, _ := a.get("/readyz")
		cb, _ := b.get("/readyz")
		return ca == http.StatusOK && cb == http.StatusOK
	})
	waitFor(t, "only the leader's pod labelled", func() bool { return labelled(leaderPod) && !labelled(followerPod) })
	if p, _ := client.CoreV1().Pods(api.DefaultNamespace).Get(context.Background(), followerPod, metav1.GetOptions{}); p.Labels["app"] != "x" {
		t.Fatalf("the follower's other labels were touched: %v", p.Labels)
	}
	// The leader steps down (graceful: it releases the Lease and its label).
	if err := leader.stop(); err != nil {
		t.Fatalf("leader stop: %v", err)
	}
	waitFor(t, "failover", func() bool { return leads(follower) })
	waitFor(t, "the new leader's pod labelled, the old one's not", func() bool { return labelled(followerPod) && !labelled(leaderPod) })
}

// TestLeaderLossEndsServe: a leader that can no longer renew its Lease
// (cut off from the API server) stops answering as the leader and Serve
// ends with the manager's error, so that the process exits and restarts as
// a follower; its pod loses the leader label.
func TestLeaderLossEndsServe(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-a", Namespace: api.DefaultNamespace}}
	client := fake.NewClientset(gpuNode("n", 1, 80), agentLease("n", time.Now()), pod)
	s := startServer(t, ServerOptions{Client: client, LeaderElect: true, Identity: "a", PodNamespace: api.DefaultNamespace, PodName: "pod-a"})
	labelled := func() bool {
		p, err := client.CoreV1().Pods(api.DefaultNamespace).Get(context.Background(), "pod-a", metav1.GetOptions{})
		return err == nil && p.Labels[api.LabelExtenderLeader] == "true"
	}
	waitFor(t, "leading with its pod labelled", func() bool { code, _ := s.get("/leaderz"); return code == http.StatusOK && labelled() })

	// From now on every renewal fails.
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("cut off")
	})
	var served error
	waitFor(t, "Serve to end", func() bool {
		select {
		case served = <-s.done:
			s.once.Do(func() { s.err = served })
			return true
		default:
			return false
		}
	})
	if served == nil || served.Error() != "leader election lost" {
		t.Fatalf("Serve ended with %v, want the error %q", served, "leader election lost")
	}
	if labelled() {
		t.Error("the former leader's pod keeps the leader label")
	}
}

// TestServeFailsWithoutListening: a replica that cannot remove its pod's
// leader label at start (here RBAC forbids it) ends Serve with that error
// before opening any port (found in review: the verbs and health ports
// stayed bound).
func TestServeFailsWithoutListening(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-a", Namespace: api.DefaultNamespace}}
	client := fake.NewClientset(pod)
	client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("forbidden")
	})
	o := ServerOptions{Client: client, LeaderElect: true, Identity: "a", PodNamespace: api.DefaultNamespace, PodName: "pod-a",
		Addr: freeAddr(t), HealthAddr: freeAddr(t), MetricsAddr: freeAddr(t), Logger: logr.Discard()}
	err := Serve(context.Background(), o)
	want := "label pod mlplane-system/pod-a mlplane.io/extender-leader=false: forbidden"
	if err == nil || err.Error() != want {
		t.Fatalf("Serve = %v, want %q", err, want)
	}
	for _, addr := range []string{o.Addr, o.HealthAddr, o.MetricsAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s is still bound after Serve returned: %v", addr, err)
			continue
		}
		l.Close()
	}
}
