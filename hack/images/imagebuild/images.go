// Package imagebuild builds mlplane's container images without a container
// engine: each binary is cross-compiled with `go build` and put, with a few
// base files, into OCI images assembled with go-containerregistry, one
// multi-platform index per image. The result is written as an OCI layout,
// as a docker-archive tarball for `ctr images import`, or pushed to a
// registry. The images are reproducible: fixed timestamps, sorted tar
// entries, no build IDs or VCS stamps in the binaries.
//
// go-containerregistry rather than ko or buildkit: it is a library (already
// the project's test registry), so the images need nothing but Go, ko
// would need a base image from a registry, and buildkit a daemon.
package imagebuild

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// Defaults the manifests in config/ use: config refers to
// DefaultRepo/<Image.Name>:DefaultTag (checked by a test).
const (
	DefaultRepo = "ghcr.io/mlplane"
	DefaultTag  = "v0.1.0"
	// Source is the org.opencontainers.image.source label.
	Source = "https://github.com/mlplane/mlplane"
	// User is the numeric user and group every image runs as (distroless's
	// "nonroot"); numeric so that the kubelet can enforce runAsNonRoot.
	User = "65532:65532"
	// PauseRef is the name the pause image also gets in layouts and
	// tarballs: containerd's sandbox_image on a node that cannot pull
	// (see docs/install.md).
	PauseRef = "localhost/pause:local"
)

// Image is one image to build: one Go main package, its binary and what
// the binary needs around it.
type Image struct {
	// Name is the repository path under the repo: "webhook",
	// "examples/model-server".
	Name string
	// Package is the Go main package, relative to the module root.
	Package string
	// Path is where the binary lies in the image; its entrypoint.
	Path string
	// Cgo builds with CGO_ENABLED=1 and ships the C library the binary and
	// what it dlopens need (only platforms with a C compiler are built);
	// otherwise the binary is static (CGO_ENABLED=0).
	Cgo bool
	// Dlopen names shared libraries the binary loads at run time whose own
	// dependencies the image must hold (the libraries themselves come from
	// the node); Cgo only.
	Dlopen []string
	// CACerts puts the build host's CA bundle at /etc/ssl/certs.
	CACerts bool
	// ExtraRefs are further full names for the image in layouts and
	// tarballs (not pushed).
	ExtraRefs []string
	// Description is the org.opencontainers.image.description label.
	Description string
}

// Binary is the binary's file name, as `go build -o DIR/` names it.
func (i Image) Binary() string { return path.Base(i.Package) }

// Images are the images `make images` builds.
var Images = []Image{
	{Name: "webhook", Package: "./cmd/webhook", Path: "/usr/local/bin/webhook",
		Description: "mlplane's mutating admission webhook"},
	{Name: "extender", Package: "./cmd/extender", Path: "/usr/local/bin/extender",
		Description: "mlplane's scheduler extender"},
	// go-nvml binds libnvidia-ml.so.1 with dlopen through cgo: a static
	// (CGO_ENABLED=0) agent only has the fake backend. The NVIDIA container
	// runtime mounts the driver's libnvidia-ml into the container, which
	// needs glibc's libm, libdl, libpthread and librt beside the agent's own
	// libc.
	{Name: "node-agent", Package: "./cmd/node-agent", Path: "/usr/local/bin/node-agent",
		Cgo: true, Dlopen: []string{"libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1"},
		Description: "mlplane's GPU node agent (NVML)"},
	// The loader talks TLS to S3, GCS, Azure, Hugging Face and registries.
	{Name: "model-loader", Package: "./cmd/model-loader", Path: "/usr/local/bin/model-loader",
		CACerts: true, Description: "mlplane's model loader (init container)"},
	{Name: "metrics-apiserver", Package: "./cmd/metrics-apiserver", Path: "/usr/local/bin/metrics-apiserver",
		Description: "mlplane's custom metrics API server: GPU figures for the HorizontalPodAutoscaler"},
	{Name: "pause", Package: "./hack/pause", Path: "/pause", ExtraRefs: []string{PauseRef},
		Description: "pod sandbox process for nodes that cannot pull registry.k8s.io/pause"},
	{Name: "examples/model-server", Package: "./examples/model-server", Path: "/usr/local/bin/model-server",
		Description: "example model server: serves what the model loader fetched"},
}

// Select returns the images named in names (all when names is empty), or
// an error listing the valid names.
func Select(names []string) ([]Image, error) {
	if len(names) == 0 {
		return Images, nil
	}
	var out []Image
	for _, n := range names {
		found := false
		for _, im := range Images {
			if im.Name == n || im.Binary() == n {
				out = append(out, im)
				found = true
				break
			}
		}
		if !found {
			valid := make([]string, 0, len(Images))
			for _, im := range Images {
				valid = append(valid, im.Name)
			}
			sort.Strings(valid)
			return nil, fmt.Errorf("unknown image %q (valid: %s)", n, strings.Join(valid, ", "))
		}
	}
	return out, nil
}
