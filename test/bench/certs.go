package bench

import (
	"net"
	"path/filepath"

	"github.com/mlplane/mlplane/internal/cluster"
)

// WriteServingCert generates a CA and a serving certificate for 127.0.0.1
// and localhost, writes the pair as dir/tls.crt and dir/tls.key (what
// controller-runtime's webhook server reads), and returns the CA in PEM.
func WriteServingCert(dir string) ([]byte, error) {
	ca, err := cluster.NewCA("mlplane-bench-ca")
	if err != nil {
		return nil, err
	}
	kp, err := ca.Issue(cluster.CertRequest{
		CommonName: "mlplane-bench-webhook",
		DNSNames:   []string{"localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		return nil, err
	}
	if err := kp.WriteFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		return nil, err
	}
	return ca.CertPEM, nil
}
