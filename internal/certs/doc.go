// Package certs issues and rotates the webhook's TLS material with
// cert-manager's own API types and PKI code, so that the self-signed mode
// produces exactly what the Certificate in config/ describes, in the layout of
// the Secret cert-manager writes (tls.crt, tls.key, ca.crt).
package certs

import (
	_ "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	_ "github.com/cert-manager/cert-manager/pkg/util/pki"
)
