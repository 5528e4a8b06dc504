package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"github.com/go-logr/logr"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/mlplane/mlplane/internal/api"
)

// maxTrustedCAs bounds the caBundle: the current CA and the ones it
// replaced, newest first, while they are still valid, so that a replica
// still serving a certificate from the previous CA stays trusted.
const maxTrustedCAs = 3

// SelfSignedOptions configures SelfSigned.
type SelfSignedOptions struct {
	// Client reads and writes the Secret and the Lease (and, for the
	// default CABundle, the webhook configuration). Required.
	Client kubernetes.Interface
	// CertDir receives tls.crt, tls.key and ca.crt. Required.
	CertDir string
	// Namespace holds the Secret and the Lease and names the Service.
	// Default api.DefaultNamespace.
	Namespace string
	// Server names the Service, the Secret, the CA and the Lease. Default
	// WebhookServer.
	Server Server
	// ExtraHosts are DNS names or IP addresses added to the serving
	// certificate. Default none.
	ExtraHosts []string
	// CABundle is the object whose caBundle is kept current. Default
	// WebhookConfigurationBundle of WebhookConfigurationName.
	CABundle BundleTarget
	// WebhookConfigurationName names the default CABundle's
	// MutatingWebhookConfiguration. Default WebhookConfigurationName.
	WebhookConfigurationName string
	// Leaves are more certificates the CA issues and renews (the
	// extender's, ExtenderCertificates), each kept in the Secret its
	// spec.secretName names, in Namespace, in cert-manager's layout:
	// tls.crt, tls.key, and ca.crt holding the CA and the previous CAs
	// still valid (TrustBundle), so that a peer that verifies against it
	// trusts both sides of a CA rotation. Default none.
	Leaves []*cmapi.Certificate
	// Identity is this replica's name in the Lease. Default hostname plus a
	// random suffix.
	Identity string
	// SyncInterval is how often every replica reads the Secret and the
	// leader checks renewal and the caBundle. Default 30s.
	SyncInterval time.Duration
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election.
	// Defaults 15s, 10s, 2s (client-go's usual values).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Now is the clock renewal is judged by. Default time.Now.
	Now func() time.Time
	// Logger default logr.Discard().
	Logger logr.Logger
}

// A BundleTarget is the API object that tells a server's clients which CAs
// to trust: the MutatingWebhookConfiguration's caBundle for the webhook
// (the API server calls it), the APIServices' for the metrics API server
// (the aggregator proxies to it).
type BundleTarget interface {
	// UpdateCABundle replaces each caBundle of the object with
	// bundle(current value), writing only when one changes. An object that
	// does not exist yet is an error that apierrors.IsNotFound recognises.
	UpdateCABundle(ctx context.Context, bundle func(old []byte) []byte) (changed bool, err error)
	// String names the object, for logs and errors.
	String() string
}

// WebhookConfigurationBundle is the caBundle of every entry of the
// MutatingWebhookConfiguration Name.
type WebhookConfigurationBundle struct {
	Client kubernetes.Interface
	Name   string
}

var _ BundleTarget = WebhookConfigurationBundle{}

// UpdateCABundle implements BundleTarget.
func (w WebhookConfigurationBundle) UpdateCABundle(ctx context.Context, bundle func(old []byte) []byte) (bool, error) {
	cli := w.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := cli.Get(ctx, w.Name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("%s: %w", w, err)
	}
	cfg = cfg.DeepCopy()
	changed := false
	for i := range cfg.Webhooks {
		cc := &cfg.Webhooks[i].ClientConfig
		if b := bundle(cc.CABundle); !bytes.Equal(b, cc.CABundle) {
			cc.CABundle = b
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	if _, err := cli.Update(ctx, cfg, metav1.UpdateOptions{FieldManager: api.FieldManager}); err != nil {
		return false, fmt.Errorf("update caBundle of %s: %w", w, err)
	}
	return true, nil
}

func (w WebhookConfigurationBundle) String() string {
	return "webhook configuration " + w.Name
}

// SelfSigned is a server's own certificate authority: it keeps a CA and a
// serving certificate (the Certificates Server.CACertificate and
// Server.ServingCertificate describe) in one Secret, in cert-manager's
// layout plus the CA's key, renews them at cert-manager's renewal time,
// patches the CA into the CABundle target and writes the serving files
// into CertDir. Every replica writes its own CertDir from the Secret; only
// the leader of the Lease issues and patches.
type SelfSigned struct {
	opts    SelfSignedOptions
	ca      *cmapi.Certificate
	serving *cmapi.Certificate
	log     logr.Logger

	readyOnce sync.Once
	ready     chan struct{}
}

// NewSelfSigned applies the defaults of opts.
func NewSelfSigned(opts SelfSignedOptions) (*SelfSigned, error) {
	if opts.Client == nil || opts.CertDir == "" {
		return nil, errors.New("certs: SelfSignedOptions needs Client and CertDir")
	}
	if opts.Namespace == "" {
		opts.Namespace = api.DefaultNamespace
	}
	if opts.Server == (Server{}) {
		opts.Server = WebhookServer
	}
	if opts.WebhookConfigurationName == "" {
		opts.WebhookConfigurationName = WebhookConfigurationName
	}
	if opts.CABundle == nil {
		opts.CABundle = WebhookConfigurationBundle{Client: opts.Client, Name: opts.WebhookConfigurationName}
	}
	if opts.Identity == "" {
		host, _ := os.Hostname()
		opts.Identity = host + "_" + uuid.NewString()
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 30 * time.Second
	}
	if opts.LeaseDuration <= 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.RenewDeadline <= 0 {
		opts.RenewDeadline = 10 * time.Second
	}
	if opts.RetryPeriod <= 0 {
		opts.RetryPeriod = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return &SelfSigned{
		opts:    opts,
		ca:      opts.Server.CACertificate(opts.Namespace),
		serving: opts.Server.ServingCertificate(opts.Namespace, opts.ExtraHosts...),
		log:     opts.Logger.WithName("certs"),
		ready:   make(chan struct{}),
	}, nil
}

// Ready is closed once CertDir holds a serving certificate.
func (s *SelfSigned) Ready() <-chan struct{} { return s.ready }

// Start runs Run in the background until ctx ends and returns once CertDir
// holds a serving certificate, so that a server started next finds its
// files; or Run's error, or ctx's.
func (s *SelfSigned) Start(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	s.log.Info("waiting for the self-signed certificate", "dir", s.opts.CertDir)
	select {
	case <-s.Ready():
		return nil
	case err := <-errc:
		return fmt.Errorf("self-signed certificates: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run elects a leader among the replicas and keeps the certificate current
// until ctx ends: the leader issues and renews, every replica (the leader
// too) follows the Secret into CertDir.
func (s *SelfSigned) Run(ctx context.Context) error {
	go s.follow(ctx)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: s.opts.Server.Lease, Namespace: s.opts.Namespace},
		Client:     s.opts.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: s.opts.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   s.opts.LeaseDuration,
			RenewDeadline:   s.opts.RenewDeadline,
			RetryPeriod:     s.opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            s.opts.Server.Lease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: s.lead,
				OnStoppedLeading: func() { s.log.Info("no longer the certificate writer", "identity", s.opts.Identity) },
			},
		})
		if err != nil {
			return err
		}
		le.Run(ctx)
	}
	return nil
}

// lead reconciles at once and then every SyncInterval while leading.
func (s *SelfSigned) lead(ctx context.Context) {
	s.log.Info("leading: this replica issues and renews the serving certificate", "server", s.opts.Server.Service, "identity", s.opts.Identity)
	for {
		wait := s.opts.SyncInterval
		if err := s.Reconcile(ctx); err != nil {
			s.log.Error(err, "reconciling the serving certificate; retrying", "server", s.opts.Server.Service)
			wait = s.opts.RetryPeriod
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// follow copies the Secret into CertDir at once and then every
// SyncInterval (every RetryPeriod until the first success).
func (s *SelfSigned) follow(ctx context.Context) {
	for {
		wait := s.opts.SyncInterval
		if err := s.Sync(ctx); err != nil {
			s.log.V(1).Info("serving certificate not available yet", "err", err.Error())
			wait = s.opts.RetryPeriod
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Sync writes the serving certificate of the Secret into CertDir.
func (s *SelfSigned) Sync(ctx context.Context) error {
	sec, err := s.opts.Client.CoreV1().Secrets(s.opts.Namespace).Get(ctx, s.opts.Server.Secret, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if _, err := ParseKeyPair(sec.Data[KeyCert], sec.Data[KeyKey], nil); err != nil {
		return fmt.Errorf("secret %s/%s: %w", s.opts.Namespace, s.opts.Server.Secret, err)
	}
	return s.writeFiles(sec.Data)
}

func (s *SelfSigned) writeFiles(data map[string][]byte) error {
	changed, err := WriteFiles(s.opts.CertDir, map[string][]byte{KeyCert: data[KeyCert], KeyKey: data[KeyKey], KeyCA: data[KeyCA]})
	if err != nil {
		return err
	}
	if changed {
		s.log.Info("wrote the serving certificate", "dir", s.opts.CertDir)
	}
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

// Reconcile is one pass of the leader: issue a new CA when there is none
// or it is due for renewal, a new serving certificate when it is missing,
// due, for other names or from another CA; put the CA into the CABundle
// target before any certificate it signed is served;
// then store the Secret and write CertDir.
func (s *SelfSigned) Reconcile(ctx context.Context) error {
	sec, data, err := s.secret(ctx, s.opts.Server.Secret)
	if err != nil {
		return err
	}
	now := s.opts.Now()

	ca, caReason := s.currentCA(data, now)
	if caReason != "" {
		if ca, err = Issue(s.ca, nil); err != nil {
			return err
		}
		s.log.Info("issued a new CA", "reason", caReason, "notAfter", ca.Cert.NotAfter)
	}
	serving, servingReason := s.currentServing(data, ca, now)
	if servingReason != "" {
		if serving, err = Issue(s.serving, ca); err != nil {
			return err
		}
		s.log.Info("issued a new serving certificate", "reason", servingReason, "notAfter", serving.Cert.NotAfter)
	}
	// Trust first, serve second. Without the CABundle target (not applied
	// yet) nobody calls the server: serve, and retry the caBundle.
	bundleErr := s.ensureCABundle(ctx, ca.Cert, now)
	if bundleErr != nil && !apierrors.IsNotFound(bundleErr) {
		return bundleErr
	}
	want := serving.SecretData()
	want[KeyCAKey] = ca.KeyPEM
	if caReason != "" || servingReason != "" {
		if err := s.storeSecret(ctx, sec, s.opts.Server.Secret, s.opts.Server.Service, want); err != nil {
			return err
		}
	}
	if err := s.writeFiles(want); err != nil {
		return err
	}
	errs := []error{bundleErr}
	for _, leaf := range s.opts.Leaves {
		errs = append(errs, s.reconcileLeaf(ctx, leaf, ca, now))
	}
	return errors.Join(errs...)
}

// reconcileLeaf issues leaf from ca into its Secret when the Secret has no
// valid certificate for leaf from ca, or it is due for renewal.
func (s *SelfSigned) reconcileLeaf(ctx context.Context, leaf *cmapi.Certificate, ca *KeyPair, now time.Time) error {
	name := leaf.Spec.SecretName
	sec, data, err := s.secret(ctx, name)
	if err != nil {
		return err
	}
	_, reason := currentLeaf(leaf, data, ca, now)
	if reason == "" {
		return nil
	}
	kp, err := Issue(leaf, ca)
	if err != nil {
		return err
	}
	s.log.Info("issued a certificate", "certificate", leaf.Name, "secret", name, "reason", reason, "notAfter", kp.Cert.NotAfter)
	want := kp.SecretData()
	want[KeyCA] = TrustBundle(ca.Cert, data[KeyCA], now)
	return s.storeSecret(ctx, sec, name, leaf.Name, want)
}

// storeSecret writes data as the TLS Secret name: creates it (labelled
// app.kubernetes.io/name=app) when sec, its current copy, is nil, else
// updates sec's data.
func (s *SelfSigned) storeSecret(ctx context.Context, sec *corev1.Secret, name, app string, data map[string][]byte) error {
	secrets := s.opts.Client.CoreV1().Secrets(s.opts.Namespace)
	if sec == nil {
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.opts.Namespace,
				Labels: map[string]string{"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "mlplane"}},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{FieldManager: api.FieldManager}); err != nil {
			return fmt.Errorf("create secret %s/%s: %w", s.opts.Namespace, name, err)
		}
		return nil
	}
	sec = sec.DeepCopy()
	sec.Data = data
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{FieldManager: api.FieldManager}); err != nil {
		return fmt.Errorf("update secret %s/%s: %w", s.opts.Namespace, name, err)
	}
	return nil
}

// secret reads Secret name of Namespace and its data; both nil when it
// does not exist.
func (s *SelfSigned) secret(ctx context.Context, name string) (*corev1.Secret, map[string][]byte, error) {
	sec, err := s.opts.Client.CoreV1().Secrets(s.opts.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil, nil
	case err != nil:
		return nil, nil, err
	}
	return sec, sec.Data, nil
}

// currentLeaf returns the certificate for leaf in a Secret's data, or why
// a new one is needed: none, not from ca (ca.crt must start with it), other
// names, or due for renewal.
func currentLeaf(leaf *cmapi.Certificate, data map[string][]byte, ca *KeyPair, now time.Time) (*KeyPair, string) {
	if data == nil {
		return nil, "no secret"
	}
	kp, err := ParseKeyPair(data[KeyCert], data[KeyKey], data[KeyCA])
	if err != nil {
		return nil, "no valid certificate: " + err.Error()
	}
	if first, err := pki.DecodeX509CertificateBytes(data[KeyCA]); err != nil || !first.Equal(ca.Cert) || kp.Cert.CheckSignatureFrom(ca.Cert) != nil {
		return nil, "signed by another CA"
	}
	if !NamesMatch(leaf, kp.Cert) || kp.Cert.Subject.CommonName != leaf.Spec.CommonName {
		return nil, "names changed"
	}
	if due, err := RenewalTime(leaf, kp); err != nil || !now.Before(due) {
		return nil, "due for renewal"
	}
	return kp, ""
}

// currentCA returns the Secret's CA, or why a new one is needed.
func (s *SelfSigned) currentCA(data map[string][]byte, now time.Time) (*KeyPair, string) {
	if data == nil {
		return nil, "no secret"
	}
	ca, err := ParseKeyPair(data[KeyCA], data[KeyCAKey], data[KeyCA])
	if err != nil {
		return nil, "no valid CA: " + err.Error()
	}
	if !ca.Cert.IsCA {
		return nil, "ca.crt is not a CA"
	}
	if due, err := RenewalTime(s.ca, ca); err != nil || !now.Before(due) {
		return nil, "CA due for renewal"
	}
	return ca, ""
}

// currentServing returns the Secret's serving certificate, or why a new one
// is needed.
func (s *SelfSigned) currentServing(data map[string][]byte, ca *KeyPair, now time.Time) (*KeyPair, string) {
	if data == nil {
		return nil, "no secret"
	}
	kp, err := ParseKeyPair(data[KeyCert], data[KeyKey], data[KeyCA])
	if err != nil {
		return nil, "no valid serving certificate: " + err.Error()
	}
	if !bytes.Equal(data[KeyCA], ca.CertPEM) || kp.Cert.CheckSignatureFrom(ca.Cert) != nil {
		return nil, "signed by another CA"
	}
	if !NamesMatch(s.serving, kp.Cert) {
		return nil, "names changed"
	}
	if due, err := RenewalTime(s.serving, kp); err != nil || !now.Before(due) {
		return nil, "due for renewal"
	}
	kp.CAPEM = ca.CertPEM
	return kp, ""
}

// ensureCABundle makes the CABundle target trust ca, keeping the CAs it
// trusted before while they are valid (newest first, at most
// maxTrustedCAs), so that replicas still serving the previous certificate
// keep working during a CA rotation.
func (s *SelfSigned) ensureCABundle(ctx context.Context, ca *x509.Certificate, now time.Time) error {
	changed, err := s.opts.CABundle.UpdateCABundle(ctx, func(old []byte) []byte { return TrustBundle(ca, old, now) })
	if err != nil {
		return err
	}
	if changed {
		s.log.Info("updated the caBundle", "target", s.opts.CABundle.String())
	}
	return nil
}

// TrustBundle is ca followed by the CA certificates of old that are still
// valid at now, without repeats, at most maxTrustedCAs in all.
func TrustBundle(ca *x509.Certificate, old []byte, now time.Time) []byte {
	keep := []*x509.Certificate{ca}
	if prev, err := pki.DecodeX509CertificateSetBytes(old); err == nil {
		for _, c := range prev {
			if len(keep) == maxTrustedCAs {
				break
			}
			if c.IsCA && now.Before(c.NotAfter) && !slices.ContainsFunc(keep, func(k *x509.Certificate) bool { return k.Equal(c) }) {
				keep = append(keep, c)
			}
		}
	}
	var buf bytes.Buffer
	for _, c := range keep {
		b, _ := pki.EncodeX509(c)
		buf.Write(b)
	}
	return buf.Bytes()
}
