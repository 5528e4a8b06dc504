package cluster

import (
	"fmt"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
)

// newServiceAccountKey returns an RSA key in PEM (PKCS#1), what the API
// server signs service-account tokens with; generated and encoded by
// cert-manager's PKI package, as internal/certs generates its keys.
func newServiceAccountKey() ([]byte, error) {
	key, err := pki.GenerateRSAPrivateKey(2048)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	return pki.EncodePKCS1PrivateKey(key), nil
}
