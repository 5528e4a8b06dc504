package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// WebhookConfigurationName is the MutatingWebhookConfiguration the cluster
// registers for the webhook.
const WebhookConfigurationName = "mlplane-webhook"

// WebhookOptions configures StartWebhook.
type WebhookOptions struct {
	// ConfigFile is an InjectionConfig file passed as --config. Default: the
	// webhook's built-in configuration.
	ConfigFile string
	// Registration is a MutatingWebhookConfiguration file to register, with
	// each entry's clientConfig replaced by the local URL and CA. Default:
	// config/webhook/mutatingwebhookconfiguration.yaml of the module (the
	// manifest users install) when it exists, else WebhookConfiguration.
	Registration string
	// Args are extra flags.
	Args []string
}

// shippedRegistration is the manifest StartWebhook registers by default.
const shippedRegistration = "config/webhook/mutatingwebhookconfiguration.yaml"

type webhookState struct {
	ca         *certs.KeyPair
	certDir    string
	addr       string
	metricsURL string
}

// StartWebhook generates a CA and a serving certificate for 127.0.0.1,
// starts bin/webhook with them, waits until it is ready, and registers the
// MutatingWebhookConfiguration (see WebhookConfiguration).
func (c *Cluster) StartWebhook(ctx context.Context, opts WebhookOptions) error {
	if !c.HasBin("webhook") {
		return fmt.Errorf("%s not found: run make build", c.Bin("webhook"))
	}
	// The CA an install's cert-manager (or the webhook's self-signed
	// mode) would issue.
	ca, err := certs.Issue(certs.CACertificate(api.DefaultNamespace), nil)
	if err != nil {
		return err
	}
	st := &webhookState{ca: ca, certDir: c.path("webhook-certs")}
	c.mu.Lock()
	c.webhook = st
	c.mu.Unlock()
	if _, err := c.RotateWebhookCert(); err != nil {
		return err
	}
	args := []string{"--cert-dir=" + st.certDir, "--namespace=" + api.DefaultNamespace}
	if opts.ConfigFile != "" {
		args = append(args, "--config="+opts.ConfigFile)
	}
	comp, port, metrics, err := c.webhookComponent(Webhook, append(args, opts.Args...))
	if err != nil {
		return err
	}
	c.mu.Lock() // st is published: WebhookAddr and WebhookMetricsURL read it under c.mu
	st.addr, st.metricsURL = fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)
	c.mu.Unlock()
	readyz := comp.ready
	comp.ready = func(ctx context.Context) error {
		if err := readyz(ctx); err != nil {
			return err
		}
		_, err := c.WebhookServingCert(ctx)
		return err
	}
	reg, err := webhookRegistration(opts.Registration, fmt.Sprintf("https://127.0.0.1:%d%s", port, api.WebhookPath), ca.CertPEM)
	if err != nil {
		return err
	}
	comp.after = func(ctx context.Context) error { return applyWebhookConfiguration(ctx, c, reg) }
	return c.run(ctx, comp)
}

// WebhookAddr is the webhook's host:port.
func (c *Cluster) WebhookAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.webhook == nil {
		return ""
	}
	return c.webhook.addr
}

// WebhookMetricsURL is the /metrics URL of the webhook StartWebhook
// started, "" before.
func (c *Cluster) WebhookMetricsURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.webhook == nil {
		return ""
	}
	return c.webhook.metricsURL
}

// WebhookCertDir is the directory holding the webhook's tls.crt, tls.key
// and ca.crt.
func (c *Cluster) WebhookCertDir() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.webhook == nil {
		return ""
	}
	return c.webhook.certDir
}

// RotateWebhookCert issues a new serving certificate from the webhook's CA
// (so the registered caBundle stays valid) and replaces tls.crt and tls.key,
// each by an atomic rename, as a Secret volume update would. It returns the
// new certificate; WebhookServingCert tells when the webhook serves it.
func (c *Cluster) RotateWebhookCert() (*x509.Certificate, error) {
	c.mu.Lock()
	st := c.webhook
	c.mu.Unlock()
	if st == nil {
		return nil, errors.New("webhook not started")
	}
	kp, err := certs.Issue(certs.ServingCertificate(api.DefaultNamespace, certs.ServiceName, "localhost", "127.0.0.1"), st.ca)
	if err != nil {
		return nil, err
	}
	if _, err := certs.WriteFiles(st.certDir, kp.SecretData()); err != nil {
		return nil, err
	}
	return kp.Cert, nil
}

// WebhookServingCert connects to the webhook, verifying it against the
// webhook CA as the API server does, and returns the certificate it serves.
func (c *Cluster) WebhookServingCert(ctx context.Context) (*x509.Certificate, error) {
	c.mu.Lock()
	st := c.webhook
	c.mu.Unlock()
	if st == nil || st.addr == "" {
		return nil, errors.New("webhook not started")
	}
	pool := x509.NewCertPool()
	pool.AddCert(st.ca.Cert)
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	conn, err := d.DialContext(ctx, "tcp", st.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("webhook served no certificate")
	}
	return certs[0], nil
}

// WebhookConfiguration is the MutatingWebhookConfiguration for a webhook at
// url. Two entries, because a label selector cannot express "namespace
// opted in OR pod opted in":
//   - namespaces labelled api.LabelInject=api.NamespaceInjectEnabled, for
//     every pod not labelled api.LabelInject=api.PodInjectFalse;
//   - other namespaces, for pods labelled api.LabelInject=api.PodInjectTrue.
//
// Both exclude api.SystemNamespaces and api.DefaultNamespace, fail closed,
// declare no side effects (so dry-run requests reach the webhook) and ask
// to be reinvoked if another webhook changes the pod.
func WebhookConfiguration(url string, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	excluded := append(append([]string(nil), api.SystemNamespaces...), api.DefaultNamespace)
	notExcluded := metav1.LabelSelectorRequirement{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: excluded}
	entry := func(name string, ns, obj *metav1.LabelSelector) admissionregistrationv1.MutatingWebhook {
		fail := admissionregistrationv1.Fail
		none := admissionregistrationv1.SideEffectClassNone
		ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
		scope := admissionregistrationv1.NamespacedScope
		timeout := int32(10)
		u := url
		return admissionregistrationv1.MutatingWebhook{
			Name:                    name,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle},
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			ReinvocationPolicy:      &ifNeeded,
			TimeoutSeconds:          &timeout,
			NamespaceSelector:       ns,
			ObjectSelector:          obj,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods"},
					Scope:       &scope,
				},
			}, {
				// Ephemeral containers added to a running pod (kubectl debug).
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods/ephemeralcontainers"},
					Scope:       &scope,
				},
			}},
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			entry("namespace.inject.mlplane.io",
				&metav1.LabelSelector{
					MatchLabels:      map[string]string{api.LabelInject: api.NamespaceInjectEnabled},
					MatchExpressions: []metav1.LabelSelectorRequirement{notExcluded},
				},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: api.LabelInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{api.PodInjectFalse}},
				}}),
			entry("pod.inject.mlplane.io",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: api.LabelInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{api.NamespaceInjectEnabled}},
					notExcluded,
				}},
				&metav1.LabelSelector{MatchLabels: map[string]string{api.LabelInject: api.PodInjectTrue}}),
		},
	}
}

// webhookRegistration loads file (or the shipped manifest, or falls back to
// WebhookConfiguration) and points every entry at url with caBundle.
func webhookRegistration(file, url string, caBundle []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	if file == "" {
		if root, err := ModuleRoot(); err == nil {
			if _, err := os.Stat(filepath.Join(root, shippedRegistration)); err == nil {
				file = filepath.Join(root, shippedRegistration)
			}
		}
	}
	if file == "" {
		return WebhookConfiguration(url, caBundle), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if cfg.Kind != "MutatingWebhookConfiguration" || len(cfg.Webhooks) == 0 {
		return nil, fmt.Errorf("%s: want a MutatingWebhookConfiguration with webhooks, got kind %q with %d", file, cfg.Kind, len(cfg.Webhooks))
	}
	for i := range cfg.Webhooks {
		u := url
		cfg.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle}
	}
	return &cfg, nil
}

func applyWebhookConfiguration(ctx context.Context, c *Cluster, cfg *admissionregistrationv1.MutatingWebhookConfiguration) error {
	cli := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := cli.Get(ctx, cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cli.Create(ctx, cfg, metav1.CreateOptions{FieldManager: api.FieldManager})
		return err
	}
	if err != nil {
		return err
	}
	cfg.ResourceVersion = cur.ResourceVersion
	_, err = cli.Update(ctx, cfg, metav1.UpdateOptions{FieldManager: api.FieldManager})
	return err
}
