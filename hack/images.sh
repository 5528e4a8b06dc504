#!/usr/bin/env bash
# images.sh: builds mlplane's container images, one per binary, from
# build/<binary>.Dockerfile with the repository root as context.
#
#   hack/images.sh                      # ghcr.io/mlplane/<binary>:$(git describe)
#   REGISTRY=registry.example.com/ml TAG=v0.1.0 PUSH=1 hack/images.sh
#   PLATFORMS=linux/amd64,linux/arm64 PUSH=1 hack/images.sh   # needs buildx
#
# Needs a container engine: docker (with buildx for several platforms or
# PUSH=1) or podman. Where none answers (the development machines have none),
# it does what can be done without one: builds each binary exactly as its
# Dockerfile does (same CGO setting and flags) into _output/images/, checks
# that the static ones are static, and exits 3 to say no image was built.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
REGISTRY="${REGISTRY:-ghcr.io/mlplane}"
TAG="${TAG:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
PLATFORMS="${PLATFORMS:-}"
PUSH="${PUSH:-0}"
binaries=(webhook extender node-agent)

engine=""
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
	engine=docker
elif command -v podman >/dev/null && podman info >/dev/null 2>&1; then
	engine=podman
fi

if [ -n "$engine" ]; then
	for b in "${binaries[@]}"; do
		image="$REGISTRY/$b:$TAG"
		echo "images: $image"
		if [ "$engine" = docker ] && docker buildx version >/dev/null 2>&1; then
			args=(buildx build -f "build/$b.Dockerfile" -t "$image")
			[ -n "$PLATFORMS" ] && args+=(--platform "$PLATFORMS")
			if [ "$PUSH" = 1 ]; then args+=(--push); else args+=(--load); fi
			docker "${args[@]}" .
		else
			[ -n "$PLATFORMS" ] && { echo "images: PLATFORMS needs docker buildx" >&2; exit 2; }
			DOCKER_BUILDKIT=1 "$engine" build -f "build/$b.Dockerfile" -t "$image" .
			[ "$PUSH" = 1 ] && "$engine" push "$image"
		fi
	done
	exit 0
fi

echo "images: no container engine answers (docker info / podman info); building the binaries as the Dockerfiles do, to check them" >&2
out="$root/_output/images"
mkdir -p "$out"
for b in "${binaries[@]}"; do
	cgo=0
	grep -q '^ *CGO_ENABLED=1' "build/$b.Dockerfile" && cgo=1
	CGO_ENABLED=$cgo GOOS=linux go build -trimpath -ldflags="-s -w" -o "$out/$b" "./cmd/$b"
	if [ "$cgo" = 0 ] && readelf -l "$out/$b" | grep -q 'Requesting program interpreter'; then
		echo "images: $b should be static (CGO_ENABLED=0) but is dynamically linked" >&2
		exit 1
	fi
	echo "images: $out/$b (CGO_ENABLED=$cgo) builds; image $REGISTRY/$b:$TAG not built"
done
echo "images: no image built here; see docs/install.md (Images) to build them with docker or podman" >&2
exit 3
