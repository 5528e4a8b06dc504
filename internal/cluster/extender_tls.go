package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// extenderPKI is the extender's TLS material in the local cluster, issued
// the way an install issues it (internal/certs, from the Certificates of
// config/certmanager, the serving one also for 127.0.0.1): the extender's
// cert dir (tls.crt, tls.key, ca.crt) and the mlplane-scheduler's client
// certificate dir, in the layout of the Secrets each mounts.
type extenderPKI struct {
	ca, client           *certs.KeyPair
	serverDir, clientDir string
}

// extenderTLS issues the extender's TLS material, once per cluster.
func (c *Cluster) extenderTLS() (*extenderPKI, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.extPKI != nil {
		return c.extPKI, nil
	}
	ca, err := certs.Issue(certs.CACertificate(api.DefaultNamespace), nil)
	if err != nil {
		return nil, err
	}
	serving, err := certs.Issue(certs.ExtenderServingCertificate(api.DefaultNamespace, "127.0.0.1"), ca)
	if err != nil {
		return nil, err
	}
	client, err := certs.Issue(certs.ExtenderClientCertificate(api.DefaultNamespace), ca)
	if err != nil {
		return nil, err
	}
	p := &extenderPKI{ca: ca, client: client, serverDir: c.path("extender-certs"), clientDir: c.path("extender-client-certs")}
	for dir, kp := range map[string]*certs.KeyPair{p.serverDir: serving, p.clientDir: client} {
		if _, err := certs.WriteFiles(dir, kp.SecretData()); err != nil {
			return nil, err
		}
	}
	c.extPKI = p
	return p, nil
}

// ExtenderSchedulerTLS is the extender tlsConfig the mlplane-scheduler
// calls the local extender with: its client certificate, and the CA of the
// extender's serving certificate. Nil before StartExtender.
func (c *Cluster) ExtenderSchedulerTLS() *SchedulerTLS {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.extPKI == nil {
		return nil
	}
	d := c.extPKI.clientDir
	return &SchedulerTLS{CertFile: filepath.Join(d, certs.KeyCert), KeyFile: filepath.Join(d, certs.KeyKey), CAFile: filepath.Join(d, certs.KeyCA)}
}

// ExtenderClientTLS is a client TLS configuration for the local extender's
// verbs: it trusts the extender's CA and, with asScheduler, presents the
// mlplane-scheduler's client certificate; without, none (which the
// extender refuses).
func (c *Cluster) ExtenderClientTLS(asScheduler bool) (*tls.Config, error) {
	c.mu.Lock()
	p := c.extPKI
	c.mu.Unlock()
	if p == nil {
		return nil, errors.New("the extender is not started")
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	cfg := &tls.Config{RootCAs: roots}
	if asScheduler {
		pair, err := tls.X509KeyPair(p.client.CertPEM, p.client.KeyPEM)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
