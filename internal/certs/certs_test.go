package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mlplane/mlplane/internal/api"
)

// readCertificates decodes the cert-manager Certificates of a manifest file.
func readCertificates(t *testing.T, path string) map[string]*cmapi.Certificate {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]*cmapi.Certificate{}
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var crt cmapi.Certificate
		if err := dec.Decode(&crt); err != nil {
			break
		}
		if crt.Kind == cmapi.CertificateKind {
			out[crt.Name] = &crt
		}
	}
	return out
}

// The self-signed modes issue exactly what config/ asks cert-manager for:
// same names, lifetimes, keys, usages and issuers.
func TestCertificatesMatchConfig(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []*cmapi.Certificate
	}{
		{"../../config/certmanager/certificates.yaml", []*cmapi.Certificate{
			CACertificate(api.DefaultNamespace),
			ServingCertificate(api.DefaultNamespace, ServiceName),
			ExtenderServingCertificate(api.DefaultNamespace),
			ExtenderClientCertificate(api.DefaultNamespace),
		}},
		// Its CA is the webhook's CA Issuer: only the serving certificate.
		{"../../config/custom-metrics/certmanager/certificate.yaml", []*cmapi.Certificate{
			MetricsAPIServer.ServingCertificate(api.DefaultNamespace),
		}},
	} {
		got := readCertificates(t, tc.file)
		if len(got) != len(tc.want) {
			t.Errorf("%s has %d Certificates, want %d", tc.file, len(got), len(tc.want))
		}
		for _, want := range tc.want {
			crt, ok := got[want.Name]
			if !ok {
				t.Fatalf("%s has no Certificate %s; has %v", tc.file, want.Name, got)
			}
			if crt.Namespace != want.Namespace {
				t.Errorf("%s: namespace %q, want %q", want.Name, crt.Namespace, want.Namespace)
			}
			if d := cmp.Diff(want.Spec, crt.Spec); d != "" {
				t.Errorf("Certificate %s differs from the self-signed mode's (-Go +config):\n%s", want.Name, d)
			}
		}
	}
}

func TestIssueFromCertificates(t *testing.T) {
	ca, err := Issue(CACertificate(api.DefaultNamespace), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != CACertificateName {
		t.Fatalf("CA: IsCA=%v CN=%q", ca.Cert.IsCA, ca.Cert.Subject.CommonName)
	}
	if !bytes.Equal(ca.CAPEM, ca.CertPEM) {
		t.Fatal("a self-signed CA's ca.crt must be the CA itself, as cert-manager's SelfSigned issuer writes it")
	}
	// 5 years = 43800h.
	if d := ca.Cert.NotAfter.Sub(ca.Cert.NotBefore); d != 43800*time.Hour {
		t.Errorf("CA lifetime %v, want 43800h", d)
	}

	srv, err := Issue(ServingCertificate(api.DefaultNamespace, ServiceName, "127.0.0.1"), ca)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Cert.IsCA {
		t.Fatal("serving certificate is a CA")
	}
	key, ok := srv.Key.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("serving key %T, want ECDSA P-256", srv.Key)
	}
	// 90 days = 2160h.
	if d := srv.Cert.NotAfter.Sub(srv.Cert.NotBefore); d != 2160*time.Hour {
		t.Errorf("serving lifetime %v, want 2160h", d)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, host := range []string{"mlplane-webhook.mlplane-system.svc", "mlplane-webhook.mlplane-system.svc.cluster.local", "127.0.0.1"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", host, err)
		}
	}
	data := srv.SecretData()
	if !bytes.Equal(data[KeyCA], ca.CertPEM) {
		t.Error("ca.crt of the serving Secret is not the CA")
	}
	back, err := ParseKeyPair(data[KeyCert], data[KeyKey], data[KeyCA])
	if err != nil || !back.Cert.Equal(srv.Cert) {
		t.Fatalf("ParseKeyPair of the Secret data: %v", err)
	}
	if _, err := ParseKeyPair(data[KeyCert], ca.KeyPEM, nil); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("ParseKeyPair with the wrong key: err = %v, want a mismatch", err)
	}
	// cert-manager renews 2/3 through: 60 of 90 days.
	due, err := RenewalTime(ServingCertificate(api.DefaultNamespace, ServiceName), srv)
	if err != nil {
		t.Fatal(err)
	}
	if want := srv.Cert.NotBefore.Add(60 * 24 * time.Hour); due.Sub(want).Abs() > time.Second {
		t.Errorf("renewal at %v, want %v", due, want)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	data := map[string][]byte{KeyCert: []byte("c"), KeyKey: []byte("k"), KeyCA: []byte("a")}
	if changed, err := WriteFiles(dir, data); err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	if changed, err := WriteFiles(dir, data); err != nil || changed {
		t.Fatalf("same data again: changed=%v err=%v, want no change", changed, err)
	}
	for name, want := range data {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, KeyKey)); fi.Mode().Perm() != 0o600 {
		t.Errorf("tls.key mode %v, want 0600", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	// A key an earlier writer left readable is made 0600 again, whatever
	// the umask or the old file's mode.
	if err := os.Chmod(filepath.Join(dir, KeyKey), 0o644); err != nil {
		t.Fatal(err)
	}
	data[KeyKey] = []byte("k2")
	if _, err := WriteFiles(dir, data); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, KeyKey)); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten tls.key mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestTrustBundle(t *testing.T) {
	now := time.Now()
	var cas []*x509.Certificate
	for range 4 {
		kp, err := Issue(CACertificate(api.DefaultNamespace), nil)
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, kp.Cert)
	}
	b := TrustBundle(cas[0], nil, now)
	b = TrustBundle(cas[1], b, now)
	b = TrustBundle(cas[1], b, now) // same CA again: no repeat
	got, err := pki.DecodeX509CertificateSetBytes(b)
	if err != nil || len(got) != 2 || !got[0].Equal(cas[1]) || !got[1].Equal(cas[0]) {
		t.Fatalf("bundle after two CAs: %d certs, err %v; want [ca1 ca0]", len(got), err)
	}
	b = TrustBundle(cas[3], TrustBundle(cas[2], b, now), now)
	got, _ = pki.DecodeX509CertificateSetBytes(b)
	if len(got) != maxTrustedCAs || !got[0].Equal(cas[3]) || !got[2].Equal(cas[1]) {
		t.Fatalf("bundle is capped at %d, newest first; got %d", maxTrustedCAs, len(got))
	}
	// Past the old CAs' expiry only the current one stays.
	got, _ = pki.DecodeX509CertificateSetBytes(TrustBundle(cas[3], b, cas[2].NotAfter.Add(time.Second)))
	if len(got) != 1 {
		t.Fatalf("expired CAs kept: %d certs", len(got))
	}
}

// newSelfSigned is a SelfSigned on a fake clientset holding the webhook
// configuration, with the clock *now.
func newSelfSigned(t *testing.T, now *time.Time) (*SelfSigned, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigurationName},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "namespace.inject.mlplane.io"}, {Name: "pod.inject.mlplane.io"}},
	})
	s, err := NewSelfSigned(SelfSignedOptions{Client: client, CertDir: t.TempDir(), ExtraHosts: []string{"127.0.0.1"}, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return s, client
}

type state struct {
	ca, serving *x509.Certificate
	bundle      [][]*x509.Certificate // per webhook entry
	files       *x509.Certificate
}

func observe(t *testing.T, s *SelfSigned, client *fake.Clientset) state {
	t.Helper()
	ctx := context.Background()
	sec, err := client.CoreV1().Secrets(api.DefaultNamespace).Get(ctx, SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseKeyPair(sec.Data[KeyCA], sec.Data[KeyCAKey], nil)
	if err != nil {
		t.Fatalf("CA in the Secret: %v", err)
	}
	srv, err := ParseKeyPair(sec.Data[KeyCert], sec.Data[KeyKey], sec.Data[KeyCA])
	if err != nil {
		t.Fatalf("serving certificate in the Secret: %v", err)
	}
	if err := srv.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("serving certificate not signed by the Secret's CA: %v", err)
	}
	cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := state{ca: ca.Cert, serving: srv.Cert}
	for _, w := range cfg.Webhooks {
		certs, err := pki.DecodeX509CertificateSetBytes(w.ClientConfig.CABundle)
		if err != nil {
			t.Fatalf("caBundle of %s: %v", w.Name, err)
		}
		st.bundle = append(st.bundle, certs)
	}
	crt, err := os.ReadFile(filepath.Join(s.opts.CertDir, KeyCert))
	if err != nil {
		t.Fatal(err)
	}
	if st.files, err = pki.DecodeX509CertificateBytes(crt); err != nil {
		t.Fatal(err)
	}
	return st
}

func secretWrites(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "secrets" && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			n++
		}
	}
	return n
}

func TestSelfSignedReconcile(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	s, client := newSelfSigned(t, &now)

	// Bootstrap: a CA, a serving certificate from it, the CA trusted by
	// both webhook entries, the files written.
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("not ready after the first reconcile")
	}
	st := observe(t, s, client)
	for i, b := range st.bundle {
		if len(b) != 1 || !b[0].Equal(st.ca) {
			t.Fatalf("webhook %d caBundle has %d certs, want just the CA", i, len(b))
		}
	}
	if !st.files.Equal(st.serving) {
		t.Fatal("cert dir does not hold the Secret's serving certificate")
	}

	// Nothing due: no write.
	writes := secretWrites(client)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := secretWrites(client); got != writes {
		t.Fatalf("a reconcile with nothing due wrote the Secret (%d writes, want %d)", got, writes)
	}

	// 61 days on, past 2/3 of 90 days: a new serving certificate from the
	// same CA, the caBundle unchanged.
	now = now.Add(61 * 24 * time.Hour)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st2 := observe(t, s, client)
	if st2.serving.Equal(st.serving) || !st2.ca.Equal(st.ca) {
		t.Fatalf("after 61 days: serving renewed=%v, CA kept=%v; want true, true", !st2.serving.Equal(st.serving), st2.ca.Equal(st.ca))
	}
	if len(st2.bundle[0]) != 1 || !st2.files.Equal(st2.serving) {
		t.Fatal("serving renewal changed the caBundle or did not reach the cert dir")
	}

	// The Secret deleted (how an admin forces a rotation): a new CA, trusted
	// alongside the previous one, and a serving certificate from it.
	if err := client.CoreV1().Secrets(api.DefaultNamespace).Delete(ctx, SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st3 := observe(t, s, client)
	if st3.ca.Equal(st2.ca) {
		t.Fatal("no new CA after the Secret was deleted")
	}
	for i, b := range st3.bundle {
		if len(b) != 2 || !b[0].Equal(st3.ca) || !b[1].Equal(st2.ca) {
			t.Fatalf("webhook %d caBundle after CA rotation has %d certs; want [new CA, previous CA]", i, len(b))
		}
	}

	// The names changed (another Service): reissued from the same CA.
	s.serving = ServingCertificate(api.DefaultNamespace, "other", "127.0.0.1")
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st4 := observe(t, s, client)
	if !st4.ca.Equal(st3.ca) || !slices.Contains(st4.serving.DNSNames, "other.mlplane-system.svc") {
		t.Fatalf("names change: CA kept=%v, names %v", st4.ca.Equal(st3.ca), st4.serving.DNSNames)
	}
}

// A follower writes what the leader stored, and refuses a broken Secret.
func TestSelfSignedSync(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	leader, client := newSelfSigned(t, &now)
	follower, err := NewSelfSigned(SelfSignedOptions{Client: client, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := follower.Sync(ctx); err == nil {
		t.Fatal("Sync before any Secret exists succeeded")
	}
	if err := leader.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(leader.opts.CertDir, KeyCert))
	b, _ := os.ReadFile(filepath.Join(follower.opts.CertDir, KeyCert))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("follower's cert dir differs from the leader's")
	}
	sec, _ := client.CoreV1().Secrets(api.DefaultNamespace).Get(ctx, SecretName, metav1.GetOptions{})
	sec.Data[KeyKey] = sec.Data[KeyCAKey] // a key that does not match tls.crt
	if _, err := client.CoreV1().Secrets(api.DefaultNamespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := follower.Sync(ctx); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Sync of a mismatched pair: err = %v", err)
	}
	if c, _ := os.ReadFile(filepath.Join(follower.opts.CertDir, KeyCert)); !bytes.Equal(c, b) {
		t.Fatal("a broken Secret replaced the follower's files")
	}
}

// Before the webhook configuration exists (applied after the Deployment),
// the leader still stores and writes the certificate, reports the missing
// configuration, and fills its caBundle once it appears.
func TestSelfSignedWithoutWebhookConfiguration(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	s, err := NewSelfSigned(SelfSignedOptions{Client: client, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(ctx); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Reconcile without the configuration: err = %v, want not found", err)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("the certificate was not written while the configuration is missing")
	}
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigurationName},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "pod.inject.mlplane.io"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st := observe(t, s, client)
	if len(st.bundle) != 1 || len(st.bundle[0]) != 1 || !st.bundle[0][0].Equal(st.ca) {
		t.Fatal("caBundle not filled with the CA once the configuration exists")
	}
}

// TestSelfSignedLeaves: the self-signed mode issues the extender's serving
// and client certificates from its CA into their own Secrets, leaves them
// alone while valid, and reissues both when the CA changes, with ca.crt
// trusting the new CA and the previous one.
func TestSelfSignedLeaves(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	s, client := newSelfSigned(t, &now)
	s.opts.Leaves = ExtenderCertificates(api.DefaultNamespace, "127.0.0.1")
	leaf := func(secret string) (*KeyPair, []*x509.Certificate) {
		t.Helper()
		sec, err := client.CoreV1().Secrets(api.DefaultNamespace).Get(ctx, secret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, has := sec.Data[KeyCAKey]; has {
			t.Fatalf("Secret %s holds the CA's key", secret)
		}
		kp, err := ParseKeyPair(sec.Data[KeyCert], sec.Data[KeyKey], sec.Data[KeyCA])
		if err != nil {
			t.Fatalf("Secret %s: %v", secret, err)
		}
		bundle, err := pki.DecodeX509CertificateSetBytes(sec.Data[KeyCA])
		if err != nil {
			t.Fatalf("Secret %s ca.crt: %v", secret, err)
		}
		return kp, bundle
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	ca := observe(t, s, client).ca
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srv, bundle := leaf(ExtenderSecretName)
	if len(bundle) != 1 || !bundle[0].Equal(ca) {
		t.Fatalf("extender ca.crt has %d certificates, want the CA", len(bundle))
	}
	for _, host := range []string{"mlplane-extender.mlplane-system.svc", "127.0.0.1"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("extender serving certificate for %s: %v", host, err)
		}
	}
	cli, _ := leaf(ExtenderClientSecretName)
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cli.Cert.Subject.CommonName != ExtenderClientName {
		t.Errorf("client certificate %q: %v", cli.Cert.Subject.CommonName, err)
	}
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the client certificate is good for serving too")
	}

	writes := secretWrites(client)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := secretWrites(client); got != writes {
		t.Fatalf("a reconcile with nothing due wrote %d Secrets", got-writes)
	}

	// A new CA: both leaves reissued from it, the old CA still trusted.
	if err := client.CoreV1().Secrets(api.DefaultNamespace).Delete(ctx, SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	ca2 := observe(t, s, client).ca
	for _, name := range []string{ExtenderSecretName, ExtenderClientSecretName} {
		kp, bundle := leaf(name)
		if kp.Cert.CheckSignatureFrom(ca2) != nil || len(bundle) != 2 || !bundle[0].Equal(ca2) || !bundle[1].Equal(ca) {
			t.Errorf("Secret %s after the CA rotation: signed by the new CA %v, ca.crt %d certificates; want the new CA, then the old", name, kp.Cert.CheckSignatureFrom(ca2) == nil, len(bundle))
		}
	}
}

// bundleRecorder is a BundleTarget holding one caBundle in memory.
type bundleRecorder struct{ bundle []byte }

func (b *bundleRecorder) UpdateCABundle(_ context.Context, f func([]byte) []byte) (bool, error) {
	nb := f(b.bundle)
	changed := !bytes.Equal(nb, b.bundle)
	b.bundle = nb
	return changed, nil
}

func (b *bundleRecorder) String() string { return "recorder" }

// Another server (the custom metrics API server) gets its own Secret, CA
// and names, and its CA goes to its own BundleTarget.
func TestSelfSignedOtherServer(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	target := &bundleRecorder{}
	dir := t.TempDir()
	s, err := NewSelfSigned(SelfSignedOptions{Client: client, CertDir: dir, Server: MetricsAPIServer, CABundle: target})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	sec, err := client.CoreV1().Secrets(api.DefaultNamespace).Get(ctx, "mlplane-metrics-apiserver-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseKeyPair(sec.Data[KeyCA], sec.Data[KeyCAKey], nil)
	if err != nil || ca.Cert.Subject.CommonName != "mlplane-metrics-apiserver-ca" {
		t.Fatalf("CA %v, %v; want common name mlplane-metrics-apiserver-ca", ca, err)
	}
	srv, err := ParseKeyPair(sec.Data[KeyCert], sec.Data[KeyKey], nil)
	if err != nil || !slices.Contains(srv.Cert.DNSNames, "mlplane-metrics-apiserver.mlplane-system.svc") {
		t.Fatalf("serving certificate names %v, %v", srv.Cert.DNSNames, err)
	}
	if bundle, err := pki.DecodeX509CertificateSetBytes(target.bundle); err != nil || len(bundle) != 1 || !bundle[0].Equal(ca.Cert) {
		t.Fatalf("caBundle %v, %v: want the CA", bundle, err)
	}
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "mutatingwebhookconfigurations" && a.GetVerb() != "list" {
			t.Errorf("the webhook configuration was touched: %s", a.GetVerb())
		}
	}
	if c, err := os.ReadFile(filepath.Join(dir, KeyCert)); err != nil || !bytes.Equal(c, sec.Data[KeyCert]) {
		t.Errorf("cert dir not written: %v", err)
	}
}
