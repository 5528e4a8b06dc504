package cluster

import (
	"fmt"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/mlplane/mlplane/internal/certs"
)

// writePKI creates the cluster CA, the API server's serving certificate, the
// service-account key, and a client certificate and kubeconfig per identity,
// all issued by the product's certificate code (internal/certs, cert-manager's
// PKI), so that every run of the harness exercises it.
func (c *Cluster) writePKI() error {
	ca, err := certs.Issue(certs.SelfSignedCACertificate("mlplane-local-cluster-ca"), nil)
	if err != nil {
		return err
	}
	c.ca = ca
	if err := renameio.WriteFile(c.path("pki", "ca.crt"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	hosts := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "127.0.0.1", "10.96.0.1"}
	if c.real != nil {
		hosts = append(hosts, RealNodeIP)
	}
	serving, err := certs.Issue(certs.HostCertificate("kube-apiserver", "kube-apiserver", hosts...), ca)
	if err != nil {
		return err
	}
	if err := serving.WritePair(c.path("pki", "apiserver.crt"), c.path("pki", "apiserver.key")); err != nil {
		return err
	}
	// The front-proxy client identity: with --requestheader-client-ca-file
	// set, the kube components' delegated authentication stops logging
	// "missing content for CA bundle" every few seconds.
	proxy, err := certs.Issue(certs.ClientCertificate("front-proxy-client", "front-proxy-client"), ca)
	if err != nil {
		return err
	}
	if err := proxy.WritePair(c.path("pki", "front-proxy-client.crt"), c.path("pki", "front-proxy-client.key")); err != nil {
		return err
	}
	sa, err := newServiceAccountKey()
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(c.path("pki", "sa.key"), sa, 0o600); err != nil {
		return err
	}
	if _, err := c.port(APIServer); err != nil {
		return err
	}
	ids := []struct{ file, user, group string }{
		{"kubeconfig", "mlplane-admin", "system:masters"},
		{"config/kube-controller-manager.kubeconfig", "system:kube-controller-manager", ""},
		{"config/kube-scheduler.kubeconfig", "system:kube-scheduler", ""},
	}
	if c.real != nil {
		ids = append(ids,
			struct{ file, user, group string }{"config/kubelet.kubeconfig", "system:node:" + c.RealNodeName(), "system:nodes"},
			struct{ file, user, group string }{"config/kube-proxy.kubeconfig", "system:kube-proxy", ""})
		// the API server's identity towards the kubelet (logs, exec)
		kc, err := certs.Issue(certs.ClientCertificate("kube-apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"), ca)
		if err != nil {
			return err
		}
		if err := kc.WritePair(c.path("pki", "apiserver-kubelet-client.crt"), c.path("pki", "apiserver-kubelet-client.key")); err != nil {
			return err
		}
	}
	for _, id := range ids {
		var groups []string
		if id.group != "" {
			groups = []string{id.group}
		}
		kp, err := certs.Issue(certs.ClientCertificate(filepath.Base(id.file), id.user, groups...), ca)
		if err != nil {
			return err
		}
		if err := c.writeKubeconfig(c.path(id.file), id.user, kp); err != nil {
			return err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = ClientQPS, ClientBurst
	c.restConfig = cfg
	c.client, err = kubernetes.NewForConfig(cfg)
	return err
}

func (c *Cluster) writeKubeconfig(path, user string, kp *certs.KeyPair) error {
	const name = "mlplane-local"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: "https://" + c.addr(APIServer), CertificateAuthorityData: c.ca.CertPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	cfg.CurrentContext = name
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return renameio.WriteFile(path, b, 0o600)
}

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
