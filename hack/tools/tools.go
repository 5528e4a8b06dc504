//go:build tools

// Package tools pins the control-plane binaries that the local cluster runs
// (internal/cluster, hack/demo, test/e2e). build.sh builds them into bin/.
// etcd has its own module (etcd/): k8s.io/kubernetes requires a newer etcd
// server library, which would lift the pinned etcd release.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
