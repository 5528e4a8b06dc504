//go:build tools

// Package tools pins containerd v2 (the daemon, its runc shim and ctr) for
// the local cluster's real node. It is a module of its own so that
// containerd builds with the dependency versions of its release, not those
// k8s.io/kubernetes would lift it to. ../build.sh builds it into bin/.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
