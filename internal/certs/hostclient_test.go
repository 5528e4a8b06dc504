package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// verify checks that cert was signed by ca and is valid for host and
// usage, as a TLS peer would check it.
func verify(ca, cert *KeyPair, host string, usage x509.ExtKeyUsage) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	_, err := cert.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// The local cluster's PKI: a CA, a serving certificate for hosts and a
// client certificate per Kubernetes identity.
func TestHostAndClientCertificates(t *testing.T) {
	ca, err := Issue(SelfSignedCACertificate("test-ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != "test-ca" {
		t.Fatalf("CA: IsCA=%v CN=%q", ca.Cert.IsCA, ca.Cert.Subject.CommonName)
	}
	serving, err := Issue(HostCertificate("srv", "srv", "localhost", "127.0.0.1"), ca)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if err := verify(ca, serving, host, x509.ExtKeyUsageServerAuth); err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", host, err)
		}
	}
	if err := verify(ca, serving, "example.com", x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("serving certificate verified for a name it does not carry")
	}
	if err := verify(ca, serving, "127.0.0.1", x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("serving certificate verified as a client certificate")
	}

	client, err := Issue(ClientCertificate("admin", "mlplane-admin", "system:masters"), ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, client, "", x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	if err := verify(ca, client, "", x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("client certificate verified as a serving certificate")
	}
	if got := client.Cert.Subject; got.CommonName != "mlplane-admin" || len(got.Organization) != 1 || got.Organization[0] != "system:masters" {
		t.Errorf("client subject = %v, want CN=mlplane-admin O=system:masters", got)
	}
	noGroup, err := Issue(ClientCertificate("scheduler", "system:kube-scheduler"), ca)
	if err != nil {
		t.Fatal(err)
	}
	if got := noGroup.Cert.Subject.Organization; len(got) != 0 {
		t.Errorf("client without groups has organizations %v", got)
	}

	other, err := Issue(SelfSignedCACertificate("other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(other, serving, "127.0.0.1", x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("certificate verified against a CA that did not sign it")
	}
}

func TestWritePair(t *testing.T) {
	ca, err := Issue(SelfSignedCACertificate("test-ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := Issue(HostCertificate("srv", "srv", "127.0.0.1"), ca)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key")
	if err := kp.WritePair(crt, key); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Errorf("written files are not a usable key pair: %v", err)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}
