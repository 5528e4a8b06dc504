//go:build tools

// Package tools pins the control-plane binaries that the local cluster runs
// (internal/cluster, hack/demo, test/e2e), and the kubelet and kube-proxy of
// its real node. build.sh builds them into bin/.
// etcd has its own module (etcd/): k8s.io/kubernetes requires a newer etcd
// server library, which would lift the pinned etcd release. containerd and
// the CNI plugins have their own modules too (containerd/, cni/), so that
// each is built with the dependency versions its release was tested with.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
