#!/usr/bin/env bash
# build.sh BIN: builds the pinned control-plane tools into BIN (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok,
# kustomize), the real node's (kubelet, kube-proxy, containerd,
# containerd-shim-runc-v2, ctr, and the CNI plugins into BIN/cni/), copies
# KWOK's stage YAMLs into BIN/kwok-stages/ and the cert-manager and
# prometheus-operator CRDs into BIN/crds/. It installs Debian's runc and
# nftables when they are missing (apt-get, as root only).
#
# The versions are pinned by go.mod here (and etcd/, containerd/, cni/). A
# stamp file records a hash of those pins and of this script; when it matches
# and every output exists, nothing is rebuilt.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: build.sh BIN}"
mkdir -p "$bin"
bin="$(cd "$bin" && pwd)"

# CRDs other parts of mlplane validate their manifests against.
CERT_MANAGER=github.com/cert-manager/cert-manager@v1.21.2
PROM_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.90.1

# The real node's runtime pieces that come from Debian rather than Go modules:
# runc needs cgo and libseccomp to build, and Debian 12's runc (1.1.5, with
# seccomp and the distribution's security backports) is what the real node
# was measured with under containerd 1.6 and 2.4 (docs/local-cluster.md); nft is the command
# kube-proxy's nftables mode (sigs.k8s.io/knftables) drives.
debs=(runc:runc nftables:nft)
missing=()
for d in "${debs[@]}"; do
	command -v "${d#*:}" >/dev/null || [ -x "/usr/sbin/${d#*:}" ] || missing+=("${d%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "tools: installing Debian packages: ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	else
		echo "tools: the real node needs Debian packages ${missing[*]} (apt-get install as root); the control plane does not" >&2
	fi
fi

tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kustomize
	kubelet kube-proxy containerd containerd-shim-runc-v2 ctr
	cni/bridge cni/host-local cni/loopback cni/portmap)
stamp="$bin/.tools-stamp"
want="$(cd "$here" && cat go.mod go.sum tools.go etcd/go.mod etcd/go.sum etcd/main.go \
	containerd/go.mod containerd/go.sum containerd/tools.go cni/go.mod cni/go.sum cni/tools.go build.sh | sha256sum | cut -d' ' -f1)"

complete() {
	for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
	[ -d "$bin/kwok-stages" ] && [ -d "$bin/crds/cert-manager" ] && [ -d "$bin/crds/prometheus" ]
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && complete; then
	echo "tools: up to date in $bin"
	exit 0
fi
rm -f "$stamp"

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
ldflags='-s -w'
start=$(date +%s)

echo "tools: building etcd (go.etcd.io/etcd/server/v3)"
(cd "$here/etcd" && go build -trimpath -ldflags="$ldflags" -o "$bin/etcd" .)

modver() { # DIR MODULE -> the version DIR's go.mod pins
	(cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}

echo "tools: building containerd, containerd-shim-runc-v2, ctr (github.com/containerd/containerd/v2)"
ctrd="github.com/containerd/containerd/v2"
ctrdver="$(modver containerd "$ctrd")"
s=$(date +%s)
for name in containerd containerd-shim-runc-v2 ctr; do
	(cd "$here/containerd" && go build -trimpath -tags 'no_btrfs no_devmapper no_zfs' \
		-ldflags="$ldflags -X $ctrd/version.Version=$ctrdver" -o "$bin/$name" "$ctrd/cmd/$name")
done
echo "tools:   containerd: $(( $(date +%s) - s ))s"

echo "tools: building the CNI plugins (github.com/containernetworking/plugins)"
mkdir -p "$bin/cni"
s=$(date +%s)
for pkg in ipam/host-local main/bridge main/loopback meta/portmap; do
	(cd "$here/cni" && go build -trimpath -ldflags="$ldflags" -o "$bin/cni/$(basename "$pkg")" \
		"github.com/containernetworking/plugins/plugins/$pkg")
done
echo "tools:   CNI plugins: $(( $(date +%s) - s ))s"

# Without -X the Kubernetes binaries report v0.0.0-master (a node's
# kubeletVersion too); give them the pinned release.
kver="$(modver . k8s.io/kubernetes)"
kminor="${kver#v1.}"
kminor="${kminor%%.*}"
kldflags="$ldflags -X k8s.io/component-base/version.gitVersion=$kver -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kminor"
kldflags="$kldflags -X k8s.io/client-go/pkg/version.gitVersion=$kver -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$kminor"
echo "tools: building kwok, kustomize, kubectl, kube-scheduler, kube-controller-manager, kube-apiserver, kube-proxy, kubelet"
for pkg in sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kustomize/kustomize/v5 \
	k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubelet; do
	name="$(basename "$pkg")"
	[ "$name" = v5 ] && name=kustomize
	flags="$ldflags"
	case "$pkg" in k8s.io/kubernetes/*) flags="$kldflags" ;; esac
	echo "tools:   $name"
	s=$(date +%s)
	(cd "$here" && go build -trimpath -ldflags="$flags" -o "$bin/$name" "$pkg")
	echo "tools:   $name: $(( $(date +%s) - s ))s"
done

echo "tools: KWOK stages"
kwokdir="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
rm -rf "$bin/kwok-stages" && mkdir -p "$bin/kwok-stages"
cp "$kwokdir/kustomize/stage/node/fast/node-initialize.yaml" \
	"$kwokdir/kustomize/stage/node/heartbeat/node-heartbeat.yaml" \
	"$kwokdir"/kustomize/stage/pod/fast/pod-*.yaml "$bin/kwok-stages/"
chmod u+w "$bin"/kwok-stages/*

moddir() { # module@version -> its directory in the module cache
	(cd "$here" && go mod download -json "$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}
echo "tools: CRDs ($CERT_MANAGER, $PROM_OPERATOR)"
cm="$(moddir "$CERT_MANAGER")"
po="$(moddir "$PROM_OPERATOR")"
rm -rf "$bin/crds" && mkdir -p "$bin/crds/cert-manager" "$bin/crds/prometheus"
cp "$cm"/deploy/crds/*.yaml "$bin/crds/cert-manager/"
cp "$po/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$bin/crds/prometheus/"
chmod -R u+w "$bin/crds"

echo "$want" >"$stamp"
echo "tools: done in $(( $(date +%s) - start ))s"
