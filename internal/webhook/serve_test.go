package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	admissionv1 "k8s.io/api/admission/v1"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mlplane/mlplane/internal/api"
)

// fakeAPIServer serves what the webhook reads: discovery, and the metadata
// of namespaces (list, an idle watch, get).
func fakeAPIServer(t *testing.T, labels map[string]map[string]string) *httptest.Server {
	item := func(name string) map[string]any {
		return map[string]any{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
			"metadata": map[string]any{"name": name, "labels": labels[name], "resourceVersion": "1"}}
	}
	write := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api":
			write(w, map[string]any{"kind": "APIVersions", "versions": []string{"v1"}})
		case r.URL.Path == "/apis":
			write(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{}})
		case r.URL.Path == "/api/v1":
			write(w, map[string]any{"kind": "APIResourceList", "groupVersion": "v1", "resources": []any{
				map[string]any{"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": []string{"get", "list", "watch"}},
				map[string]any{"name": "limitranges", "singularName": "limitrange", "namespaced": true, "kind": "LimitRange", "verbs": []string{"get", "list", "watch"}},
				map[string]any{"name": "resourcequotas", "singularName": "resourcequota", "namespaced": true, "kind": "ResourceQuota", "verbs": []string{"get", "list", "watch"}},
			}})
		case r.URL.Path == "/api/v1/limitranges" || r.URL.Path == "/api/v1/resourcequotas":
			// None in any namespace: an empty list, or a watch that ends its
			// initial events at once.
			kind := map[string]string{"/api/v1/limitranges": "LimitRange", "/api/v1/resourcequotas": "ResourceQuota"}[r.URL.Path]
			if r.URL.Query().Get("watch") != "true" {
				write(w, map[string]any{"apiVersion": "v1", "kind": kind + "List", "metadata": map[string]any{"resourceVersion": "1"}, "items": []any{}})
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			if r.URL.Query().Get("sendInitialEvents") == "true" {
				_ = json.NewEncoder(w).Encode(map[string]any{"type": "BOOKMARK", "object": map[string]any{"apiVersion": "v1", "kind": kind,
					"metadata": map[string]any{"resourceVersion": "1", "annotations": map[string]string{"k8s.io/initial-events-end": "true"}}}})
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case r.URL.Path == "/api/v1/namespaces" && r.URL.Query().Get("watch") == "true":
			// client-go's reflector asks for a streaming list (watch with
			// sendInitialEvents): the objects, then the bookmark that ends
			// them; a plain watch gets no events.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			if r.URL.Query().Get("sendInitialEvents") == "true" {
				enc := json.NewEncoder(w)
				for name := range labels {
					_ = enc.Encode(map[string]any{"type": "ADDED", "object": item(name)})
				}
				_ = enc.Encode(map[string]any{"type": "BOOKMARK", "object": map[string]any{
					"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
					"metadata": map[string]any{"resourceVersion": "1", "annotations": map[string]string{"k8s.io/initial-events-end": "true"}}}})
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case r.URL.Path == "/api/v1/namespaces":
			var items []any
			for name := range labels {
				items = append(items, item(name))
			}
			write(w, map[string]any{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
				"metadata": map[string]any{"resourceVersion": "1"}, "items": items})
		case strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/"):
			name := strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/")
			if _, ok := labels[name]; !ok {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
				return
			}
			write(w, item(name))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func writeServingCert(t *testing.T, dir string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webhook"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds, failing after a generous bound.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// TestRun starts the whole server (manager, namespace informer, TLS
// webhook, health and metrics) against a fake API server, mutates a pod
// over HTTPS, and shuts down gracefully.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	apiserver := fakeAPIServer(t, map[string]map[string]string{"ml": {api.LabelInject: api.NamespaceInjectEnabled}, "default": nil})
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
`, apiserver.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(dir, "certs")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeServingCert(t, certDir)

	crlog.SetLogger(testr.New(t))
	port, health, metrics, pprofPort := freePort(t), freePort(t), freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Host: "127.0.0.1", Port: port, CertDir: certDir, Kubeconfig: kubeconfig,
			HealthAddr: fmt.Sprintf("127.0.0.1:%d", health), MetricsAddr: fmt.Sprintf("127.0.0.1:%d", metrics),
			PprofAddr: fmt.Sprintf("127.0.0.1:%d", pprofPort), ShutdownTimeout: 10 * time.Second}, testr.New(t))
	}()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	get := func(url string) (string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: HTTP %d %s", url, resp.StatusCode, b)
		}
		return string(b), nil
	}
	waitFor(t, "readyz", func() error {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		_, err := get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
		return err
	})
	if _, err := get(fmt.Sprintf("http://127.0.0.1:%d/healthz", health)); err != nil {
		t.Fatal(err)
	}
	if _, err := get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/cmdline", pprofPort)); err != nil {
		t.Fatalf("--pprof-addr: %v", err)
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Post(fmt.Sprintf("https://127.0.0.1:%d%s", port, Path), "application/json", bytes.NewReader(review(t, vllmPod(), admissionv1.Create)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 {
		t.Fatalf("HTTP %d: %s (%v)", resp.StatusCode, body, err)
	}

	m, err := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`mlplane_webhook_requests_total{result="mutated"} 1`, "mlplane_webhook_request_duration_seconds_count 1", "mlplane_webhook_config_reloads_total"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	cancel()
	stopped = true
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
