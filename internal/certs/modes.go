package certs

import (
	"fmt"
	"strings"
)

// Where a server's serving certificate comes from: its --cert-mode, the same
// for the webhook and the custom metrics API server.
const (
	// ModeCertManager serves tls.crt and tls.key from the certificate
	// directory as someone else writes them: cert-manager's Secret mounted
	// there (config/default), or any other tool. The default.
	ModeCertManager = "cert-manager"
	// ModeSelfSigned makes the server its own CA (SelfSigned): it issues and
	// renews the certificates config/certmanager describes, keeps them in a
	// Secret, writes the certificate directory and patches the caBundle of
	// the objects that call it (config/overlays/self-signed).
	ModeSelfSigned = "self-signed"
)

// Modes are the values --cert-mode takes.
var Modes = []string{ModeCertManager, ModeSelfSigned}

// ValidateMode returns nil for one of Modes, else `--cert-mode "x": want
// one of cert-manager, self-signed`.
func ValidateMode(mode string) error {
	for _, m := range Modes {
		if mode == m {
			return nil
		}
	}
	return fmt.Errorf("--cert-mode %q: want one of %s", mode, strings.Join(Modes, ", "))
}
