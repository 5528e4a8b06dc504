package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestCAIssue(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA {
		t.Fatal("CA certificate lacks the CA bit")
	}
	serving, err := ca.Issue(CertRequest{CommonName: "srv", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.VerifyPair(serving.CertPEM, "127.0.0.1", x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("serving certificate does not verify for 127.0.0.1: %v", err)
	}
	if err := ca.VerifyPair(serving.CertPEM, "example.com", x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("serving certificate verified for a name it does not carry")
	}
	client, err := ca.Issue(CertRequest{CommonName: "admin", Organization: []string{"system:masters"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.VerifyPair(client.CertPEM, "", x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	if got := client.Cert.Subject.Organization; len(got) != 1 || got[0] != "system:masters" {
		t.Errorf("client organization = %v", got)
	}
	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.VerifyPair(serving.CertPEM, "127.0.0.1", x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("certificate verified against a CA that did not sign it")
	}
}

func TestKeyPairWriteFiles(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue(CertRequest{CommonName: "srv", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := kp.WriteFiles(crt, key); err != nil {
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
