# syntax=docker/dockerfile:1
# mlplane node-agent image. Build from the repository root (hack/images.sh):
#   docker buildx build -f build/node-agent.Dockerfile -t ghcr.io/mlplane/node-agent:TAG .
# cgo: go-nvml loads libnvidia-ml.so.1 with dlopen, so the agent links
# against glibc and runs on distroless/base (glibc, no shell). The NVIDIA
# container runtime mounts the driver's library into the container.
# Built on the target platform (cgo does not cross-compile here): use a
# native builder or QEMU per platform.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/node-agent ./cmd/node-agent

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/node-agent /usr/local/bin/node-agent
# distroless's nonroot user; the manifests also set runAsUser 65532.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/node-agent"]
