package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ServiceAccountKubeconfig writes <Dir>/config/<file> (file defaults to
// "<namespace>-<name>.kubeconfig"), a kubeconfig that authenticates to the
// API server as ServiceAccount namespace/name with a token of the
// TokenRequest API valid for ttl (at least 10 minutes), and returns its
// path. With boundPod set the token is bound to that pod (which must exist
// in namespace), as the token the kubelet mounts into a pod is: the API
// server then puts the pod's node in the user's extra
// "authentication.kubernetes.io/node-name". The ServiceAccount must exist.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name, boundPod, file string, ttl time.Duration) (string, error) {
	secs := int64(ttl / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}
	if boundPod != "" {
		pod, err := c.client.CoreV1().Pods(namespace).Get(ctx, boundPod, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("token for %s/%s bound to pod %s: %w", namespace, name, boundPod, err)
		}
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tok, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	const cluster = "mlplane-local"
	user := "system:serviceaccount:" + namespace + ":" + name
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[cluster] = &clientcmdapi.Cluster{Server: "https://" + c.addr(APIServer), CertificateAuthorityData: c.ca.CertPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts[cluster] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: user}
	cfg.CurrentContext = cluster
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return "", err
	}
	if file == "" {
		file = namespace + "-" + name + ".kubeconfig"
	}
	path := c.path("config", file)
	return path, renameio.WriteFile(path, b, 0o600)
}

// ApplyConfig applies files of the module's config/ directory (paths
// relative to it, such as "rbac/extender.yaml") as an admin installing
// mlplane would: bin/kubectl apply --server-side, field manager
// "mlplane-install".
func (c *Cluster) ApplyConfig(ctx context.Context, files ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"--kubeconfig", c.Kubeconfig(), "apply", "--server-side", "--force-conflicts", "--field-manager=" + installFieldManager}
	for _, f := range files {
		args = append(args, "-f", filepath.Join(root, "config", f))
	}
	if out, err := exec.CommandContext(ctx, c.Bin("kubectl"), args...).CombinedOutput(); err != nil {
		return fmt.Errorf("applying config/ %v: %w\n%s", files, err, out)
	}
	return nil
}
