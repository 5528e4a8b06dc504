package extender

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// extenderHost is the name the scheduler reaches the extender by.
const extenderHost = "mlplane-extender.mlplane-system.svc"

// tlsPKI is a CA with the extender's serving and client certificates, as
// cert-manager or the self-signed mode issue them.
type tlsPKI struct {
	ca, serving, client *certs.KeyPair
}

func newTLSPKI(t testing.TB) *tlsPKI {
	t.Helper()
	ca, err := certs.Issue(certs.CACertificate(api.DefaultNamespace), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsPKI{ca: ca}
	if p.serving, err = certs.Issue(certs.ExtenderServingCertificate(api.DefaultNamespace), ca); err != nil {
		t.Fatal(err)
	}
	if p.client, err = certs.Issue(certs.ExtenderClientCertificate(api.DefaultNamespace), ca); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeDir writes the extender's cert dir as the kubelet mounts its Secret.
func (p *tlsPKI) writeDir(t testing.TB, dir string, caPEM []byte) {
	t.Helper()
	data := p.serving.SecretData()
	data[certs.KeyCA] = caPEM
	if _, err := certs.WriteFiles(dir, data); err != nil {
		t.Fatal(err)
	}
}

// tlsClient is an HTTP client that verifies the extender against ca and
// presents cert (none when nil), over HTTP/2 as kube-scheduler's
// transport negotiates it; a new connection per client.
func tlsClient(ca *certs.KeyPair, cert *certs.KeyPair) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	cfg := &tls.Config{RootCAs: roots, ServerName: extenderHost}
	if cert != nil {
		pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			panic(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// post sends a malformed filter call: 400 means the request reached the
// verbs.
func post(c *http.Client, addr string) (*http.Response, error) {
	resp, err := c.Post("https://"+addr+PathFilter, "application/json", strings.NewReader("{"))
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// TestServeTLS: the verbs are served over TLS to the scheduler's client
// certificate only; the files are reloaded when they change.
func TestServeTLS(t *testing.T) {
	p := newTLSPKI(t)
	dir := t.TempDir()
	p.writeDir(t, dir, p.ca.CertPEM)
	s := startServer(t, ServerOptions{Client: fake.NewClientset(), TLS: &TLSOptions{CertDir: dir, ReloadInterval: 20 * time.Millisecond}})
	addr := s.addrs["addr"]
	waitFor(t, "readyz", func() bool { code, _ := s.get("/readyz"); return code == http.StatusOK })

	resp, err := post(tlsClient(p.ca, p.client), addr)
	if err != nil || resp.StatusCode != http.StatusBadRequest || resp.ProtoMajor != 2 {
		t.Fatalf("the scheduler's certificate: %v %+v, want HTTP/2 400 from the filter", err, resp)
	}

	// Refused: no certificate; one from another CA; the CA's serving
	// certificate of the webhook (not for client authentication); one for
	// client authentication under another name.
	other, err := certs.Issue(certs.CACertificate(api.DefaultNamespace), nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := certs.Issue(certs.ExtenderClientCertificate(api.DefaultNamespace), other)
	if err != nil {
		t.Fatal(err)
	}
	webhook, err := certs.Issue(certs.ServingCertificate(api.DefaultNamespace, certs.ServiceName), p.ca)
	if err != nil {
		t.Fatal(err)
	}
	intruderCrt := certs.ExtenderClientCertificate(api.DefaultNamespace)
	intruderCrt.Spec.CommonName = "intruder"
	intruder, err := certs.Issue(intruderCrt, p.ca)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cert   *certs.KeyPair
		reason string
	}{
		{"no certificate", nil, RefusedNoCertificate},
		{"another CA", foreign, RefusedUntrusted},
		{"a serving certificate", webhook, RefusedUntrusted},
		{"another name", intruder, RefusedName},
	} {
		if resp, err := post(tlsClient(p.ca, tc.cert), addr); err == nil {
			t.Errorf("%s: answered %d, want the handshake refused", tc.name, resp.StatusCode)
		}
		_, m := s.get("/metrics")
		if want := `mlplane_extender_clients_refused_total{reason="` + tc.reason + `"} `; !strings.Contains(m, want) {
			t.Errorf("%s: metrics lack %s", tc.name, want)
		}
	}
	_, m := s.get("/metrics")
	for reason, n := range map[string]string{RefusedNoCertificate: "1", RefusedUntrusted: "2", RefusedName: "1"} {
		if want := `mlplane_extender_clients_refused_total{reason="` + reason + `"} ` + n; !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Plain HTTP is not served on the verbs' port.
	if resp, err := http.Post("http://"+addr+PathFilter, "application/json", strings.NewReader("{")); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTP request to an HTTPS server") {
			t.Errorf("plain HTTP: %d %q", resp.StatusCode, b)
		}
	}

	// A renewed serving certificate is served from the next handshake on.
	renewed, err := certs.Issue(certs.ExtenderServingCertificate(api.DefaultNamespace), p.ca)
	if err != nil {
		t.Fatal(err)
	}
	p.serving = renewed
	p.writeDir(t, dir, p.ca.CertPEM)
	waitFor(t, "the renewed serving certificate", func() bool {
		resp, err := post(tlsClient(p.ca, p.client), addr)
		return err == nil && resp.TLS.PeerCertificates[0].Equal(renewed.Cert)
	})
	// A client certificate from a new CA is accepted once ca.crt holds it
	// (the self-signed mode writes the new CA and the old one).
	if _, err := post(tlsClient(p.ca, foreign), addr); err == nil {
		t.Fatal("the new CA's client accepted before ca.crt names it")
	}
	p.writeDir(t, dir, append(append([]byte{}, other.CertPEM...), p.ca.CertPEM...))
	waitFor(t, "the new CA trusted", func() bool { _, err := post(tlsClient(p.ca, foreign), addr); return err == nil })
	if _, err := post(tlsClient(p.ca, p.client), addr); err != nil {
		t.Errorf("the old CA's client refused during the rotation: %v", err)
	}
}

// TestServeTLSNeedsFiles: a missing or broken cert dir stops Serve at
// start with the file named.
func TestServeTLSNeedsFiles(t *testing.T) {
	p := newTLSPKI(t)
	dir := t.TempDir()
	err := Serve(t.Context(), ServerOptions{Client: fake.NewClientset(), TLS: &TLSOptions{CertDir: dir}, Addr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "extender TLS: open "+dir+"/tls.crt: no such file or directory") {
		t.Errorf("no files: %v", err)
	}
	p.writeDir(t, dir, []byte("not a certificate"))
	err = Serve(t.Context(), ServerOptions{Client: fake.NewClientset(), TLS: &TLSOptions{CertDir: dir}, Addr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
	if want := "extender TLS: ca.crt in " + dir + " holds no PEM certificate"; err == nil || err.Error() != want {
		t.Errorf("broken ca.crt: %v, want %q", err, want)
	}
}

// BenchmarkFilterPrioritizeOverTLS is BenchmarkFilterPrioritize over a
// real loopback connection, as kube-scheduler makes the calls: plain HTTP
// (what the extender served before), TLS with the client certificate on a
// kept-alive connection (kube-scheduler's transport keeps connections and
// negotiates HTTP/2), and TLS with a new connection for every call (each
// pays a full handshake: ECDSA P-256 on both sides). cpu-ns/op is the
// process's CPU, client and server together.
func BenchmarkFilterPrioritizeOverTLS(b *testing.B) {
	p := newTLSPKI(b)
	dir := b.TempDir()
	p.writeDir(b, dir, p.ca.CertPEM)
	files, err := newTLSFiles(TLSOptions{CertDir: dir}, func(string) {}, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{500, 5000} {
		ext, names := benchExtender(b, n)
		body, _ := json.Marshal(extenderv1.ExtenderArgs{Pod: gpuPod("p", 20, 1), NodeNames: &names})
		for _, mode := range []string{"http", "tls", "tls-new-conn"} {
			b.Run(fmt.Sprintf("nodes=%d/%s", n, mode), func(b *testing.B) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				srv := &http.Server{Handler: ext.Handler()}
				var client *http.Client
				url := "http://" + ln.Addr().String()
				if mode == "http" {
					go func() { _ = srv.Serve(ln) }()
					client = &http.Client{}
				} else {
					srv.TLSConfig = files.config()
					go func() { _ = srv.ServeTLS(ln, "", "") }()
					client = tlsClient(p.ca, p.client)
					client.Transport.(*http.Transport).DisableKeepAlives = mode == "tls-new-conn"
					url = "https://" + ln.Addr().String()
				}
				defer srv.Close()
				b.ReportAllocs()
				cpu := startCPU()
				for b.Loop() {
					for _, path := range []string{PathFilter, PathPrioritize} {
						resp, err := client.Post(url+path, "application/json", bytes.NewReader(body))
						if err != nil {
							b.Fatal(err)
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							b.Fatalf("%s: %d", path, resp.StatusCode)
						}
					}
				}
				cpu.report(b)
			})
		}
	}
}
