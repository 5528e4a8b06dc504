package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/cluster"
)

// TestRealNode runs a real container on the local cluster's real node
// (kubelet, containerd, runc, CNI bridge, kube-proxy) and reaches it from
// this host over the bridge and through a Service. The host's restoration
// is checked when the suite stops the cluster (Finish fails otherwise).
func TestRealNode(t *testing.T) {
	f := features.New("real node").
		WithLabel("component", "cluster").
		Assess("a real pod runs on the real node only when meant to, and answers over the bridge and a Service", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireRealNode(ctx, t)
			cs := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "real", nil)
			pod := cluster.RealNodePod(&corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: cluster.PodbinImage, Args: []string{"-http=:8080"},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
				}}},
			})
			start := time.Now()
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			pods := WaitPods(ctx, t, cs, ns, "app=web", 1, LongWait, PodRunning)
			t.Logf("pod Running on %s at %s after %s", pods[0].Spec.NodeName, pods[0].Status.PodIP, time.Since(start).Round(time.Millisecond))
			if pods[0].Spec.NodeName != c.RealNodeName() {
				t.Errorf("pod on %s, want the real node %s", pods[0].Spec.NodeName, c.RealNodeName())
			}
			if got := get(ctx, t, "http://"+net.JoinHostPort(pods[0].Status.PodIP, "8080")+"/"); !strings.HasPrefix(got, "podbin web") {
				t.Errorf("GET pod: %q", got)
			}
			svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "web"},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
					Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := get(ctx, t, "http://"+net.JoinHostPort(svc.Spec.ClusterIP, "80")+"/"); !strings.HasPrefix(got, "podbin web") {
				t.Errorf("GET Service %s: %q", svc.Spec.ClusterIP, got)
			}
			// From inside the pod, the kubernetes Service reaches the API server.
			podURL := "http://" + net.JoinHostPort(pods[0].Status.PodIP, "8080")
			if got := get(ctx, t, podURL+"/get?url=https://10.96.0.1:443/livez"); got != "200 ok" {
				t.Errorf("from the pod, GET https://10.96.0.1/livez: %q, want 200 ok", got)
			}

			// Without the toleration a pod never lands there.
			plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Labels: map[string]string{"app": "plain"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: cluster.PodbinImage}}}}
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, p := range WaitPods(ctx, t, cs, ns, "app=plain", 1, LongWait, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }) {
				if p.Spec.NodeName == c.RealNodeName() {
					t.Errorf("pod plain landed on the real node")
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// get polls url from this host until it answers 200 (kube-proxy programs a
// Service a moment after its endpoints appear); the addresses are the
// local cluster's, routed to its own links only.
func get(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var body string
	err := wait.For(func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		body = strings.TrimSpace(string(b))
		return resp.StatusCode == http.StatusOK, nil
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatalf("GET %s: %v (last body %q)", url, err, body)
	}
	return body
}
