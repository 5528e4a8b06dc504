// Package kube holds the one way mlplane's binaries connect to the API
// server, so that the webhook, the extender and the node agent read
// --kubeconfig alike and fail with the same message.
package kube

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig is the API server connection of a binary's --kubeconfig flag:
// the kubeconfig file at path (its current context), or, with path empty,
// the in-cluster configuration (the pod's ServiceAccount token and CA, and
// $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).
//
// The empty path is not handed to clientcmd.BuildConfigFromFlags, which
// would also fall back to in-cluster but log a warning at every start in a
// pod and, outside one, fail with advice about KUBERNETES_MASTER; here the
// error says what is missing:
//
//	no --kubeconfig and not in a cluster: unable to load in-cluster configuration, ...
//	kubeconfig /path: stat /path: no such file or directory
//
// Rate limits (QPS, Burst) and the user agent are the caller's to set.
func RESTConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}
