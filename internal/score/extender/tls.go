package extender

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	stdlog "log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

// TLSOptions configure the verbs' server for TLS with client certificates:
// kube-scheduler's extender tlsConfig (certFile, keyFile, caFile) on the
// other side.
type TLSOptions struct {
	// CertDir holds tls.crt and tls.key, the serving certificate, and
	// ca.crt, the CAs a client certificate must chain to: the layout of the
	// Secret cert-manager (or the webhook's self-signed mode) writes.
	// Required.
	CertDir string
	// ClientNames are the subject common names a client certificate may
	// carry (default [api.ExtenderClientName]). A certificate the CA
	// signed for another name (the webhook's serving certificate comes
	// from the same CA) is refused.
	ClientNames []string
	// ReloadInterval is how often the three files are re-read; a change
	// that parses is served from the next handshake on, a broken one is
	// logged and the previous files stay (default 10s, as controller-
	// runtime's certwatcher polls).
	ReloadInterval time.Duration
}

// Files in TLSOptions.CertDir, cert-manager's Secret keys.
const (
	tlsCertFile = corev1.TLSCertKey       // tls.crt
	tlsKeyFile  = corev1.TLSPrivateKeyKey // tls.key
	tlsCAFile   = "ca.crt"
)

// Reasons a client is refused, the label of clients_refused_total.
const (
	RefusedNoCertificate = "no_certificate"
	RefusedUntrusted     = "untrusted"
	RefusedName          = "name"
)

// tlsFiles is the serving certificate and the client CAs read from
// CertDir, reloaded by polling as the placement policy file is (which also
// sees a mounted Secret's symlink swap).
type tlsFiles struct {
	o       TLSOptions
	cur     atomic.Pointer[tlsMaterial]
	refused func(reason string)
	log     logr.Logger
}

// tlsMaterial is one consistent read of the three files.
type tlsMaterial struct {
	cert           *tls.Certificate
	clientCAs      *x509.CertPool
	raw            [3][]byte // tls.crt, tls.key, ca.crt as read
	servingExpires time.Time
}

// newTLSFiles reads the files once; they must be valid.
func newTLSFiles(o TLSOptions, refused func(string), log logr.Logger) (*tlsFiles, error) {
	if o.CertDir == "" {
		return nil, errors.New("TLS needs a certificate directory (tls.crt, tls.key, ca.crt)")
	}
	if len(o.ClientNames) == 0 {
		o.ClientNames = []string{api.ExtenderClientName}
	}
	if o.ReloadInterval <= 0 {
		o.ReloadInterval = 10 * time.Second
	}
	f := &tlsFiles{o: o, refused: refused, log: log}
	if _, err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// reload reads the files and swaps them in when they changed and parse;
// changed reports a swap.
func (f *tlsFiles) reload() (changed bool, err error) {
	var raw [3][]byte
	for i, name := range []string{tlsCertFile, tlsKeyFile, tlsCAFile} {
		if raw[i], err = os.ReadFile(filepath.Join(f.o.CertDir, name)); err != nil {
			return false, fmt.Errorf("extender TLS: %w", err)
		}
	}
	if cur := f.cur.Load(); cur != nil && bytes.Equal(cur.raw[0], raw[0]) && bytes.Equal(cur.raw[1], raw[1]) && bytes.Equal(cur.raw[2], raw[2]) {
		return false, nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return false, fmt.Errorf("extender TLS: %s and %s in %s: %w", tlsCertFile, tlsKeyFile, f.o.CertDir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw[2]) {
		return false, fmt.Errorf("extender TLS: %s in %s holds no PEM certificate", tlsCAFile, f.o.CertDir)
	}
	f.cur.Store(&tlsMaterial{cert: &cert, clientCAs: pool, raw: raw, servingExpires: cert.Leaf.NotAfter})
	return true, nil
}

// watch re-reads the files every ReloadInterval until ctx ends.
func (f *tlsFiles) watch(ctx context.Context) {
	t := time.NewTicker(f.o.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := f.reload()
			switch {
			case err != nil:
				f.log.Error(err, "TLS files not reloaded; serving the previous ones", "dir", f.o.CertDir)
			case changed:
				f.log.Info("TLS files reloaded", "dir", f.o.CertDir, "servingNotAfter", f.cur.Load().servingExpires)
			}
		}
	}
}

// config is the server's TLS configuration: the current serving
// certificate, and a client certificate required, chained to the current
// ca.crt for client authentication and issued to one of ClientNames.
// Verification is done here rather than by crypto/tls's
// RequireAndVerifyClientCert so that the CAs can change without a new
// configuration and every refusal is counted with its reason.
func (f *tlsFiles) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return f.cur.Load().cert, nil
		},
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: f.verifyClient,
		NextProtos:       []string{"h2", "http/1.1"},
	}
}

// verifyClient checks the client's certificate (see config).
func (f *tlsFiles) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		f.refused(RefusedNoCertificate)
		return errors.New("extender: a client certificate is required")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: f.cur.Load().clientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		f.refused(RefusedUntrusted)
		return fmt.Errorf("extender: client certificate %q: %w", leaf.Subject.CommonName, err)
	}
	if !slices.Contains(f.o.ClientNames, leaf.Subject.CommonName) {
		f.refused(RefusedName)
		return fmt.Errorf("extender: client certificate %q is not one of %v", leaf.Subject.CommonName, f.o.ClientNames)
	}
	return nil
}

// handshakeLog routes the verbs server's own messages (a refused TLS
// handshake: "http: TLS handshake error from ADDR: ...") to log.
func handshakeLog(log logr.Logger) *stdlog.Logger {
	return stdlog.New(logWriter{log}, "", 0)
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
