package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/renameio/v2"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/mlplane/mlplane/internal/api"
)

// Names shared by config/certmanager, the self-signed overlay and the
// webhook's self-signed mode.
const (
	// ServiceName is the webhook's Service; the serving certificate is for
	// its DNS names.
	ServiceName = "mlplane-webhook"
	// SecretName holds the serving certificate (cert-manager's Secret in
	// config/default; the webhook's own, with the CA's key, in self-signed
	// mode).
	SecretName = "mlplane-webhook-tls"
	// CASecretName holds the CA that cert-manager's CA Issuer signs with.
	CASecretName = "mlplane-webhook-ca"
	// CACertificateName and ServingCertificateName are the cert-manager
	// Certificates of config/certmanager.
	CACertificateName      = "mlplane-webhook-ca"
	ServingCertificateName = "mlplane-webhook-serving"
	// SelfSignedIssuerName and CAIssuerName are the Issuers of
	// config/certmanager.
	SelfSignedIssuerName = "mlplane-selfsigned"
	CAIssuerName         = "mlplane-webhook-ca"
	// WebhookConfigurationName is the MutatingWebhookConfiguration whose
	// caBundle the self-signed mode keeps current.
	WebhookConfigurationName = "mlplane-webhook"
	// LeaseName is the Lease the webhook replicas elect the one writer of
	// SecretName with.
	LeaseName = "mlplane-webhook-certs"
)

// Names of the extender's TLS material, issued by the same CA (the CA
// Issuer of config/certmanager, or the webhook's self-signed mode): the
// extender serves the scheduler extender verbs over TLS with the serving
// certificate, and kube-scheduler authenticates with the client
// certificate, which the extender verifies against ca.crt.
const (
	// ExtenderServiceName is the extender's Service; its serving
	// certificate is for the Service's DNS names.
	ExtenderServiceName = "mlplane-extender"
	// ExtenderServingCertificateName and ExtenderSecretName: the
	// extender's serving certificate and the Secret it is kept in (tls.crt,
	// tls.key, ca.crt), which the extender mounts.
	ExtenderServingCertificateName = "mlplane-extender-serving"
	ExtenderSecretName             = "mlplane-extender-tls"
	// ExtenderClientCertificateName and ExtenderClientSecretName: the
	// scheduler's client certificate for the extender and its Secret,
	// which the mlplane-scheduler mounts.
	ExtenderClientCertificateName = "mlplane-extender-client"
	ExtenderClientSecretName      = "mlplane-extender-client-tls"
	// ExtenderClientName is the client certificate's common name, the one
	// the extender accepts by default.
	ExtenderClientName = api.ExtenderClientName
)

// Secret keys: tls.crt, tls.key and ca.crt as cert-manager writes them, and,
// in self-signed mode only, the CA's private key.
const (
	KeyCert  = corev1.TLSCertKey
	KeyKey   = corev1.TLSPrivateKeyKey
	KeyCA    = cmmeta.TLSCAKey
	KeyCAKey = "ca.key"
)

// Lifetimes, as in config/certmanager: the CA 5 years, the serving
// certificate 90 days (cert-manager's default), each renewed 2/3 through.
const (
	caDurHrs  = 5 * 365 * 24
	srvDurHrs = 90 * 24
)

// Server names one TLS server of mlplane and its certificates: the
// Service its serving certificate is for, the cert-manager Certificate and
// the Secret holding that certificate, and, in self-signed mode, the common
// name of its own CA and the Lease that elects its one writer.
type Server struct {
	Service, Certificate, Secret, CA, Lease string
}

// The servers whose certificates config/certmanager and the self-signed
// modes describe.
var (
	// WebhookServer is the admission webhook's.
	WebhookServer = Server{Service: ServiceName, Certificate: ServingCertificateName, Secret: SecretName, CA: CACertificateName, Lease: LeaseName}
	// MetricsAPIServer is the custom metrics API server's
	// (config/custom-metrics). With cert-manager its certificate comes from
	// the webhook's CA Issuer; in self-signed mode it keeps a CA of its own.
	MetricsAPIServer = Server{
		Service:     "mlplane-metrics-apiserver",
		Certificate: "mlplane-metrics-apiserver-serving",
		Secret:      "mlplane-metrics-apiserver-tls",
		CA:          "mlplane-metrics-apiserver-ca",
		Lease:       "mlplane-metrics-apiserver-certs",
	}
)

// CACertificate is the Certificate of the webhook's CA, as
// config/certmanager/certificates.yaml declares it.
func CACertificate(namespace string) *cmapi.Certificate {
	return WebhookServer.CACertificate(namespace)
}

// CACertificate is the Certificate of s's CA in namespace: self-signed,
// named s.CA (also its common name and its Secret's name).
func (s Server) CACertificate(namespace string) *cmapi.Certificate {
	crt := SelfSignedCACertificate(s.CA)
	crt.Namespace = namespace
	return crt
}

// SelfSignedCACertificate is the Certificate of a self-signed CA named
// name (also its common name and its Secret's name): ECDSA P-256, 5 years,
// from the SelfSigned Issuer of config/certmanager. The local test cluster
// (internal/cluster) issues its Kubernetes CA from one.
func SelfSignedCACertificate(name string) *cmapi.Certificate {
	return &cmapi.Certificate{
		TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: cmapi.CertificateSpec{
			IsCA:       true,
			CommonName: name,
			SecretName: name,
			Duration:   &metav1.Duration{Duration: caDurHrs * time.Hour},
			PrivateKey: ecdsaKey(),
			IssuerRef:  cmmeta.IssuerReference{Group: "cert-manager.io", Kind: cmapi.IssuerKind, Name: SelfSignedIssuerName},
		},
	}
}

// HostCertificate is the Certificate named name of a serving certificate
// (server auth) with common name commonName for hosts, each a DNS name or
// an IP address: ECDSA P-256, 90 days, from the CA Issuer. The local test
// cluster's kube-apiserver serves one.
func HostCertificate(name, commonName string, hosts ...string) *cmapi.Certificate {
	crt := leafCertificate(name, name, "", commonName, nil, cmapi.UsageServerAuth)
	AddHosts(crt, hosts...)
	return crt
}

// ClientCertificate is the Certificate named name of a client certificate
// (client auth only) for the Kubernetes user user in groups: the common
// name is the user name and the organizations are the groups, which is how
// kube-apiserver's x509 authenticator reads them. ECDSA P-256, 90 days,
// from the CA Issuer. The local test cluster's kubeconfigs hold one each.
func ClientCertificate(name, user string, groups ...string) *cmapi.Certificate {
	crt := leafCertificate(name, name, "", user, nil, cmapi.UsageClientAuth)
	if len(groups) > 0 {
		crt.Spec.Subject = &cmapi.X509Subject{Organizations: groups}
	}
	return crt
}

// ServingCertificate is the Certificate of the webhook's serving
// certificate for Service service in namespace, as
// config/certmanager/certificates.yaml declares it for the defaults.
// extraHosts (DNS names or IP addresses) are added to its names: the local
// test cluster reaches the webhook at 127.0.0.1.
func ServingCertificate(namespace, service string, extraHosts ...string) *cmapi.Certificate {
	return serviceCertificate(ServingCertificateName, SecretName, namespace, service, extraHosts)
}

// ServingCertificate is the Certificate of s's serving certificate in
// namespace: for the DNS names of Service s.Service plus extraHosts (DNS
// names or IP addresses), kept in Secret s.Secret, issued by the CA Issuer
// of config/certmanager.
func (s Server) ServingCertificate(namespace string, extraHosts ...string) *cmapi.Certificate {
	return serviceCertificate(s.Certificate, s.Secret, namespace, s.Service, extraHosts)
}

// ExtenderServingCertificate is the Certificate of the extender's serving
// certificate, for the DNS names of the Service ExtenderServiceName in
// namespace and extraHosts, as config/certmanager/certificates.yaml
// declares it for the defaults.
func ExtenderServingCertificate(namespace string, extraHosts ...string) *cmapi.Certificate {
	return serviceCertificate(ExtenderServingCertificateName, ExtenderSecretName, namespace, ExtenderServiceName, extraHosts)
}

// ExtenderClientCertificate is the Certificate of the scheduler's client
// certificate for the extender (common name ExtenderClientName, client
// auth only), as config/certmanager/certificates.yaml declares it.
func ExtenderClientCertificate(namespace string) *cmapi.Certificate {
	return leafCertificate(ExtenderClientCertificateName, ExtenderClientSecretName, namespace, ExtenderClientName, nil, cmapi.UsageClientAuth)
}

// ExtenderCertificates are the extender's two Certificates: serving (with
// extraHosts) and client.
func ExtenderCertificates(namespace string, extraHosts ...string) []*cmapi.Certificate {
	return []*cmapi.Certificate{ExtenderServingCertificate(namespace, extraHosts...), ExtenderClientCertificate(namespace)}
}

// serviceCertificate is a serving certificate for the DNS names of Service
// service in namespace, and extraHosts.
func serviceCertificate(name, secret, namespace, service string, extraHosts []string) *cmapi.Certificate {
	svc := service + "." + namespace + ".svc"
	crt := leafCertificate(name, secret, namespace, svc, []string{service, service + "." + namespace, svc, svc + ".cluster.local"}, cmapi.UsageServerAuth)
	AddHosts(crt, extraHosts...)
	return crt
}

// leafCertificate is a 90-day ECDSA certificate from the CA Issuer.
func leafCertificate(name, secret, namespace, commonName string, dnsNames []string, usage cmapi.KeyUsage) *cmapi.Certificate {
	return &cmapi.Certificate{
		TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: cmapi.CertificateSpec{
			SecretName: secret,
			CommonName: commonName,
			DNSNames:   dnsNames,
			Duration:   &metav1.Duration{Duration: srvDurHrs * time.Hour},
			Usages:     []cmapi.KeyUsage{usage, cmapi.UsageDigitalSignature},
			PrivateKey: ecdsaKey(),
			IssuerRef:  cmmeta.IssuerReference{Group: "cert-manager.io", Kind: cmapi.IssuerKind, Name: CAIssuerName},
		},
	}
}

// AddHosts adds DNS names and IP addresses to a Certificate's names, once.
func AddHosts(crt *cmapi.Certificate, hosts ...string) {
	for _, h := range hosts {
		if net.ParseIP(h) != nil {
			if !slices.Contains(crt.Spec.IPAddresses, h) {
				crt.Spec.IPAddresses = append(crt.Spec.IPAddresses, h)
			}
		} else if h != "" && !slices.Contains(crt.Spec.DNSNames, h) {
			crt.Spec.DNSNames = append(crt.Spec.DNSNames, h)
		}
	}
}

func ecdsaKey() *cmapi.CertificatePrivateKey {
	return &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways}
}

// KeyPair is an issued certificate with its private key and the CA that
// signed it, PEM-encoded as in a cert-manager Secret.
type KeyPair struct {
	// Cert is the leaf certificate (the CA itself for a self-signed CA).
	Cert *x509.Certificate
	// Key is Cert's private key.
	Key crypto.Signer
	// CertPEM, KeyPEM and CAPEM are tls.crt, tls.key and ca.crt.
	CertPEM, KeyPEM, CAPEM []byte
}

// SecretData is the data of the Secret cert-manager would write for kp.
func (kp *KeyPair) SecretData() map[string][]byte {
	return map[string][]byte{KeyCert: kp.CertPEM, KeyKey: kp.KeyPEM, KeyCA: kp.CAPEM}
}

// Issue issues crt the way cert-manager's controller does: a private key
// from spec.privateKey, a CSR signed with it, the certificate template from
// the CertificateRequest (duration, usages, isCA), signed by issuer, or
// self-signed when issuer is nil (cert-manager's SelfSigned issuer, which
// writes the certificate itself as ca.crt).
func Issue(crt *cmapi.Certificate, issuer *KeyPair) (*KeyPair, error) {
	key, err := pki.GeneratePrivateKeyForCertificate(crt)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: private key: %w", crt.Name, err)
	}
	csr, err := pki.GenerateCSR(crt)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: CSR: %w", crt.Name, err)
	}
	csrDER, err := pki.EncodeCSR(csr, key)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: CSR: %w", crt.Name, err)
	}
	cr := &cmapi.CertificateRequest{Spec: cmapi.CertificateRequestSpec{
		Request:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
		Duration:  crt.Spec.Duration,
		Usages:    crt.Spec.Usages,
		IsCA:      crt.Spec.IsCA,
		IssuerRef: crt.Spec.IssuerRef,
	}}
	tmpl, err := pki.CertificateTemplateFromCertificateRequest(cr)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: template: %w", crt.Name, err)
	}
	var enc cmapi.PrivateKeyEncoding
	if crt.Spec.PrivateKey != nil {
		enc = crt.Spec.PrivateKey.Encoding
	}
	keyPEM, err := pki.EncodePrivateKey(key, enc)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: encode key: %w", crt.Name, err)
	}
	if issuer == nil {
		certPEM, cert, err := pki.SignCertificate(tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: self-sign: %w", crt.Name, err)
		}
		return &KeyPair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: certPEM}, nil
	}
	bundle, err := pki.SignCSRTemplate([]*x509.Certificate{issuer.Cert}, issuer.Key, tmpl)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: sign with %s: %w", crt.Name, issuer.Cert.Subject.CommonName, err)
	}
	cert, err := pki.DecodeX509CertificateBytes(bundle.ChainPEM)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key, CertPEM: bundle.ChainPEM, KeyPEM: keyPEM, CAPEM: bundle.CAPEM}, nil
}

// WritePair writes kp's certificate and key to certFile and keyFile (the
// key with mode 0600), key first, each replaced by an atomic rename so that
// a process watching them never reads half a file. It is for servers and
// clients that take two file paths (kube-apiserver's --tls-cert-file and
// --tls-private-key-file) rather than a cert-manager cert dir (WriteFiles).
func (kp *KeyPair) WritePair(certFile, keyFile string) error {
	if err := writeFile(keyFile, kp.KeyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(certFile, kp.CertPEM, 0o644)
}

// writeFile replaces path with b through renameio (a temporary file, synced,
// then renamed over path), with mode perm exactly: not the umask's nor an
// existing file's, which renameio.WriteFile would keep, so that a key left
// readable by an earlier writer is made 0600 again.
func writeFile(path string, b []byte, perm os.FileMode) error {
	f, err := renameio.NewPendingFile(path, renameio.WithStaticPermissions(perm))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if _, err := f.Write(b); err != nil {
		return err
	}
	return f.CloseAtomicallyReplace()
}

// ParseKeyPair reads a certificate and its key (tls.crt and tls.key, or a
// CA's certificate and key) and checks that they belong together. caPEM may
// be nil.
func ParseKeyPair(certPEM, keyPEM, caPEM []byte) (*KeyPair, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, errors.New("certificate or key missing")
	}
	cert, err := pki.DecodeX509CertificateBytes(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := pki.DecodePrivateKeyBytes(keyPEM)
	if err != nil {
		return nil, err
	}
	if ok, err := pki.PublicKeyMatchesCertificate(key.Public(), cert); err != nil || !ok {
		return nil, fmt.Errorf("key does not match certificate %s", cert.Subject.CommonName)
	}
	return &KeyPair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: caPEM}, nil
}

// RenewalTime is when cert-manager would renew kp's certificate issued for
// crt: spec.renewBefore or spec.renewBeforePercentage, else 2/3 through its
// lifetime.
func RenewalTime(crt *cmapi.Certificate, kp *KeyPair) (time.Time, error) {
	t, err := pki.RenewalTime(kp.Cert.NotBefore, kp.Cert.NotAfter, crt.Spec.RenewBefore, crt.Spec.RenewBeforePercentage, nil)
	if err != nil {
		return time.Time{}, err
	}
	if t == nil {
		return kp.Cert.NotAfter, nil
	}
	return t.Time, nil
}

// NamesMatch reports whether cert carries exactly the DNS names and IP
// addresses crt asks for.
func NamesMatch(crt *cmapi.Certificate, cert *x509.Certificate) bool {
	ips := make([]string, 0, len(cert.IPAddresses))
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	wantIPs := make([]string, 0, len(crt.Spec.IPAddresses))
	for _, s := range crt.Spec.IPAddresses {
		if ip := net.ParseIP(s); ip != nil {
			wantIPs = append(wantIPs, ip.String())
		}
	}
	return sets.New(cert.DNSNames...).Equal(sets.New(crt.Spec.DNSNames...)) && sets.New(ips...).Equal(sets.New(wantIPs...))
}

// WriteFiles writes tls.crt, tls.key and ca.crt from a cert-manager style
// Secret's data into dir, each file replaced by an atomic rename, key first:
// controller-runtime's certwatcher reloads the pair once both have changed
// (a mismatched pair in between fails to load and the old one stays).
// Files whose content is unchanged are not touched. It reports whether
// anything changed.
func WriteFiles(dir string, data map[string][]byte) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	changed := false
	for _, name := range []string{KeyKey, KeyCert, KeyCA} {
		b, ok := data[name]
		if !ok {
			continue
		}
		path := filepath.Join(dir, name)
		if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
			continue
		}
		mode := os.FileMode(0o644)
		if name == KeyKey {
			mode = 0o600
		}
		if err := writeFile(path, b, mode); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}
