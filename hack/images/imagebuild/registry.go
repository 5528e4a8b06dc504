package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Registry is go-containerregistry's registry (pkg/registry, the one
// `crane registry serve` runs) on a loopback address, for containerd on
// this machine to pull from over plain HTTP. Manifests live in memory,
// blobs in memory or in a directory; LoadLayout fills it again after a
// restart.
type Registry struct {
	// Addr is the address it serves on (host:port).
	Addr string
	srv  *http.Server
	done chan error
}

// StartRegistry serves a registry on addr, which must be a loopback IP
// address ("127.0.0.1:5000"; port 0 picks one): nothing but this machine
// may reach it. Blobs go to blobDir when it is not empty. logger gets one
// line per request (nil: none).
func StartRegistry(addr, blobDir string, logger *log.Logger) (*Registry, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("registry address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("registry address %q: only a loopback IP address (127.0.0.1, ::1) is allowed", addr)
	}
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	opts := []registry.Option{registry.Logger(logger)}
	if blobDir != "" {
		if err := os.MkdirAll(blobDir, 0o755); err != nil {
			return nil, err
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(blobDir)))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Registry{
		Addr: ln.Addr().String(),
		srv:  &http.Server{Handler: registry.New(opts...), ReadHeaderTimeout: 30 * time.Second},
		done: make(chan error, 1),
	}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

// Close stops the registry, waiting for requests in flight until ctx ends.
func (r *Registry) Close(ctx context.Context) error {
	err := r.srv.Shutdown(ctx)
	if serr := <-r.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// LoadLayout pushes every named image of the OCI layout in dir to the
// registry at addr, keeping its repository path and tag and replacing its
// registry: ghcr.io/mlplane/webhook:v0.1.0 becomes
// ADDR/mlplane/webhook:v0.1.0, localhost/pause:local ADDR/pause:local. A
// containerd whose hosts.toml makes ADDR the mirror of ghcr.io then
// resolves the names config/ uses. It returns the names pushed.
func LoadLayout(ctx context.Context, dir, addr string) ([]string, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	var pushed []string
	for _, d := range m.Manifests {
		ref := d.Annotations[AnnotationRefName]
		if ref == "" {
			continue
		}
		src, err := name.ParseReference(ref)
		if err != nil {
			return pushed, fmt.Errorf("layout %s: %q: %w", dir, ref, err)
		}
		sep := ":"
		if _, digest := src.(name.Digest); digest {
			sep = "@"
		}
		dst := addr + "/" + src.Context().RepositoryStr() + sep + src.Identifier()
		idx, err := top.ImageIndex(d.Digest)
		if err != nil {
			return pushed, fmt.Errorf("layout %s: %s: %w", dir, ref, err)
		}
		if err := Push(ctx, idx, dst); err != nil {
			return pushed, fmt.Errorf("push %s: %w", dst, err)
		}
		pushed = append(pushed, dst)
	}
	return pushed, nil
}
