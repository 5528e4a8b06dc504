#!/usr/bin/env bash
# build.sh BIN: builds the pinned control-plane tools into BIN (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok,
# kustomize), copies KWOK's stage YAMLs into BIN/kwok-stages/ and the
# cert-manager and prometheus-operator CRDs into BIN/crds/.
#
# The versions are pinned by go.mod here (and etcd/go.mod). A stamp file
# records a hash of those pins and of this script; when it matches and every
# output exists, nothing is rebuilt.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: build.sh BIN}"
mkdir -p "$bin"
bin="$(cd "$bin" && pwd)"

# CRDs other parts of mlplane validate their manifests against.
CERT_MANAGER=github.com/cert-manager/cert-manager@v1.21.2
PROM_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.90.1

tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kustomize)
stamp="$bin/.tools-stamp"
want="$(cd "$here" && cat go.mod go.sum tools.go etcd/go.mod etcd/go.sum etcd/main.go build.sh | sha256sum | cut -d' ' -f1)"

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

echo "tools: building kwok, kustomize, kubectl, kube-scheduler, kube-controller-manager, kube-apiserver"
for pkg in sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kustomize/kustomize/v5 \
	k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-apiserver; do
	name="$(basename "$pkg")"
	[ "$name" = v5 ] && name=kustomize
	echo "tools:   $name"
	(cd "$here" && go build -trimpath -ldflags="$ldflags" -o "$bin/$name" "$pkg")
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
