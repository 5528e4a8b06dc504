# syntax=docker/dockerfile:1
# mlplane extender image. Build from the repository root (hack/images.sh):
#   docker buildx build -f build/extender.Dockerfile -t ghcr.io/mlplane/extender:TAG .
# Static (CGO_ENABLED=0) on distroless/static: no libc, no shell.
ARG GO_VERSION=1.26
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/extender ./cmd/extender

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/extender /usr/local/bin/extender
# distroless's nonroot user; the manifests also set runAsUser 65532.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/extender"]
