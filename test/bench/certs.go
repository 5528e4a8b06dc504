package bench

import (
	"path/filepath"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// WriteServingCert issues a CA and the webhook's serving certificate, also
// for 127.0.0.1 and localhost, with the product's certificate code
// (internal/certs), writes the pair as dir/tls.crt and dir/tls.key (what
// controller-runtime's webhook server reads), and returns the CA in PEM.
func WriteServingCert(dir string) ([]byte, error) {
	ca, err := certs.Issue(certs.CACertificate(api.DefaultNamespace), nil)
	if err != nil {
		return nil, err
	}
	kp, err := certs.Issue(certs.ServingCertificate(api.DefaultNamespace, certs.ServiceName, "localhost", "127.0.0.1"), ca)
	if err != nil {
		return nil, err
	}
	if err := kp.WritePair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		return nil, err
	}
	return ca.CertPEM, nil
}
