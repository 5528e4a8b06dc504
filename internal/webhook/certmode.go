package webhook

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/certs"
)

// CertOptions configure the self-signed mode (certs.ModeSelfSigned); the
// cert-manager mode needs none of them. Self-signed, the webhook issues its
// own serving certificate and, for the extender, its serving certificate
// and the scheduler's client certificate (certs.ExtenderCertificates) into
// the Secrets the extender and the mlplane-scheduler mount.
type CertOptions struct {
	// Mode is certs.ModeCertManager (default) or certs.ModeSelfSigned.
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

// startCertificates, in self-signed mode, starts the certificate keeper and
// returns once CertDir holds a serving certificate, so that the webhook
// server finds its files. In cert-manager mode it does nothing.
func startCertificates(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	if o.Cert.Mode != certs.ModeSelfSigned {
		return nil
	}
	if o.CertDir == "" {
		return fmt.Errorf("--cert-mode %s needs --cert-dir, where it writes the certificate", certs.ModeSelfSigned)
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
