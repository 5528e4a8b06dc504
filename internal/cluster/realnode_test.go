package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mlplane/mlplane/internal/cluster/hoststate"
)

// TestRealNode starts the control plane with a real node (kubelet,
// containerd, runc, CNI bridge, kube-proxy) beside a KWOK node, runs a real
// pod from an image built here and served by the in-process registry,
// reaches it over the bridge and through a Service, checks that none of the
// cluster's ranges is routed through the default route, then tears down and
// checks that the host is as it was. Root and make tools only: elsewhere it
// says SKIPPED, which is not a pass.
func TestRealNode(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED, NOT PASSED: -short")
	}
	bin, err := DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := RealNodeSupported(bin); err != nil {
		t.Skipf("SKIPPED, NOT PASSED: the real node cannot run here: %v", err)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("SKIPPED, NOT PASSED: %s not built: run make tools", b)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "mlplane-realnode-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("MLPLANE_KEEP_CLUSTER_DIR") == "" {
			os.RemoveAll(dir)
		} else {
			t.Logf("kept %s (MLPLANE_KEEP_CLUSTER_DIR)", dir)
		}
	})
	defaults, err := hoststate.DefaultRouteDevs()
	if err != nil {
		t.Fatal(err)
	}

	c := New(Options{Dir: dir, BinDir: bin, RealNode: &RealNodeOptions{}, Logf: func(f string, a ...any) {
		t.Logf("%s "+f, append([]any{time.Now().Format("15:04:05.000")}, a...)...)
	}})
	stopped := false
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(os.Stderr, 40)
		}
		if !stopped {
			if err := c.Stop(); err != nil {
				t.Errorf("Stop: %v", err)
			}
		}
	})
	start := time.Now()
	if err := c.Start(ctx); errors.Is(err, hoststate.ErrHeld) {
		t.Skipf("SKIPPED, NOT PASSED: %v", err) // a concurrent run's node kept the host too long
	} else if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("control plane + real node ready in %s", time.Since(start).Round(time.Millisecond))
	// The host as the cluster recorded it, under the host lock (another
	// run's node may have been up until Start got the lock), before it
	// changed anything: checked again below once Stop has returned.
	before := c.real.base

	// Nothing of the cluster's ranges goes out through the default route.
	for _, ip := range []string{"10.96.0.1", "10.96.200.7", "10.244.0.77", "10.244.9.9", RealNodeIP, "10.0.0.5"} {
		dev, err := hoststate.RouteDev(net.ParseIP(ip))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(defaults, dev) {
			t.Errorf("route get %s: dev %s, the default route's link", ip, dev)
		} else {
			t.Logf("route get %s: dev %s", ip, dev)
		}
	}

	cs := c.Client()
	if _, err := c.AddGPUNodes(ctx, "1x1x80Gi", NodeOptions{Prefix: "kwok-", Publisher: PublishInProcess}); err != nil {
		t.Fatal(err)
	}
	ns := "realnode-test"
	if err := ensureNamespace(ctx, cs, ns, nil); err != nil {
		t.Fatal(err)
	}

	// A real pod: podbin answering HTTP, from the local registry.
	pod := RealNodePod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "web", Image: PodbinImage, Args: []string{"-http=:8080"},
			Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
		}}},
	})
	created := time.Now()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod that does not tolerate the taint stays off the real node.
	plain := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: PodbinImage}}},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var running *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		running = p
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", nil
	})
	if err != nil {
		t.Fatalf("pod web not Running: %v; status %+v", err, running.Status)
	}
	t.Logf("pod web Running on %s at %s, %s after create", running.Spec.NodeName, running.Status.PodIP, time.Since(created).Round(time.Millisecond))
	if running.Spec.NodeName != c.RealNodeName() {
		t.Errorf("pod web on %s, want the real node %s", running.Spec.NodeName, c.RealNodeName())
	}
	if !mustParseCIDR(t, RealPodCIDR).Contains(net.ParseIP(running.Status.PodIP)) {
		t.Errorf("pod IP %s outside %s", running.Status.PodIP, RealPodCIDR)
	}

	// The host reaches the pod over the bridge.
	body := httpGet(ctx, t, "http://"+net.JoinHostPort(running.Status.PodIP, "8080")+"/")
	if !strings.HasPrefix(body, "podbin web") {
		t.Errorf("GET pod: %q, want podbin web", body)
	}

	// ... and through a Service (kube-proxy's nftables DNAT).
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !mustParseCIDR(t, ServiceCIDR).Contains(net.ParseIP(svc.Spec.ClusterIP)) {
		t.Fatalf("ClusterIP %s outside %s", svc.Spec.ClusterIP, ServiceCIDR)
	}
	body = httpGet(ctx, t, "http://"+net.JoinHostPort(svc.Spec.ClusterIP, "80")+"/")
	if !strings.HasPrefix(body, "podbin web") {
		t.Errorf("GET Service %s: %q, want podbin web", svc.Spec.ClusterIP, body)
	}
	// The kubernetes Service leads to the API server, from the host and
	// from a pod.
	body = httpGet(ctx, t, "https://10.96.0.1:443/livez")
	if body != "ok" {
		t.Errorf("GET https://10.96.0.1/livez: %q, want ok", body)
	}
	body = httpGet(ctx, t, "http://"+net.JoinHostPort(running.Status.PodIP, "8080")+"/get?url=https://10.96.0.1:443/livez")
	if body != "200 ok" {
		t.Errorf("from the pod, GET https://10.96.0.1/livez: %q, want 200 ok", body)
	}

	p, err := cs.CoreV1().Pods(ns).Get(ctx, "plain", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.NodeName == c.RealNodeName() {
		t.Errorf("pod plain (no toleration) landed on the real node")
	}

	// Logs through the kubelet (the API server's kubelet client identity).
	logs, err := cs.CoreV1().Pods(ns).GetLogs("web", &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Errorf("pod logs: %v", err)
	} else {
		t.Logf("pod logs: %d bytes", len(logs))
	}

	fwd, out, err := GuardDrops()
	if err != nil {
		t.Error(err)
	}
	t.Logf("guard table: %d packets from pods dropped on their way off the host, %d to the cluster's ranges dropped on their way out", fwd, out)

	stopped = true
	stopStart := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("stopped and host restored in %s", time.Since(stopStart).Round(time.Millisecond))
	after, err := hoststate.Take(before.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if d := hoststate.Diff(before, after); len(d) > 0 {
		t.Errorf("host after the run differs from before:\n  %s", strings.Join(d, "\n  "))
	}
	if _, err := os.Stat(baselineFile(DefaultRealNodeStateDir)); err == nil {
		t.Errorf("%s left after a clean stop", baselineFile(DefaultRealNodeStateDir))
	}
}

func mustParseCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// httpGet polls url until it answers 200 (kube-proxy programs a Service a
// moment after its endpoints appear) and returns the body, trimmed. TLS is
// not verified: only ever addresses of this host's cluster ranges.
func httpGet(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // local cluster ranges only
	}}
	var body string
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			last = err
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			last = fmt.Errorf("%s: %s", resp.Status, b)
			return false, nil
		}
		body = strings.TrimSpace(string(b))
		return true, nil
	})
	if err != nil {
		t.Fatalf("GET %s: %v (last: %v)", url, err, last)
	}
	return body
}
