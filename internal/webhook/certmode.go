package webhook

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/certs"
)

// Where the serving certificate comes from (--cert-mode).
const (
	// CertModeCertManager serves tls.crt and tls.key from CertDir as someone
	// else writes them: cert-manager's Secret mounted there (config/default),
	// or any other tool. The default.
	CertModeCertManager = "cert-manager"
	// CertModeSelfSigned makes the webhook its own CA (internal/certs): it
	// issues and renews the certificates config/certmanager describes, keeps
	// them in a Secret, writes CertDir and patches the caBundle
	// (config/overlays/self-signed). It also issues the extender's serving
	// certificate and the scheduler's client certificate for it
	// (certs.ExtenderCertificates) into the Secrets the extender and the
	// mlplane-scheduler mount.
	CertModeSelfSigned = "self-signed"
)

var certModes = []string{CertModeCertManager, CertModeSelfSigned}

// CertOptions configure the self-signed mode; the cert-manager mode needs
// none of them.
type CertOptions struct {
	// Mode is CertModeCertManager (default) or CertModeSelfSigned.
	Mode string
	// WebhookConfigurationName is the MutatingWebhookConfiguration whose
	// caBundle the self-signed mode keeps. Default certs.WebhookConfigurationName.
	WebhookConfigurationName string
	// ServiceName names the serving certificate's DNS names. Default
	// certs.ServiceName.
	ServiceName string
	// ExtraHosts are more DNS names or IPs for the serving certificate.
	ExtraHosts []string
	// SyncInterval is how often the Secret is re-read and renewal checked.
	// Default 30s.
	SyncInterval time.Duration
}

func validateCertMode(mode string) error {
	for _, m := range certModes {
		if mode == m {
			return nil
		}
	}
	return fmt.Errorf("--cert-mode %q: want one of %s", mode, strings.Join(certModes, ", "))
}

// startCertificates, in self-signed mode, starts the certificate keeper and
// returns once CertDir holds a serving certificate, so that the webhook
// server finds its files. In cert-manager mode it does nothing.
func startCertificates(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	if o.Cert.Mode != CertModeSelfSigned {
		return nil
	}
	if o.CertDir == "" {
		return fmt.Errorf("--cert-mode %s needs --cert-dir, where it writes the certificate", CertModeSelfSigned)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	server := certs.WebhookServer
	if o.Cert.ServiceName != "" {
		server.Service = o.Cert.ServiceName
	}
	keeper, err := certs.NewSelfSigned(certs.SelfSignedOptions{
		Client:                   client,
		CertDir:                  o.CertDir,
		Namespace:                o.Namespace,
		Server:                   server,
		ExtraHosts:               o.Cert.ExtraHosts,
		Leaves:                   certs.ExtenderCertificates(o.Namespace),
		WebhookConfigurationName: o.Cert.WebhookConfigurationName,
		SyncInterval:             o.Cert.SyncInterval,
		Logger:                   log,
	})
	if err != nil {
		return err
	}
	return keeper.Start(ctx)
}
