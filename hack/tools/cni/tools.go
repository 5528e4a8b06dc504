//go:build tools

// Package tools pins the CNI plugins the real node's containerd runs: bridge,
// host-local, loopback and portmap from github.com/containernetworking/plugins.
// Pure Go (no cgo), so they build static in seconds on any machine, at the
// version go.sum pins, rather than Debian's older containernetworking-plugins.
// ../build.sh builds them into bin/cni/.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
