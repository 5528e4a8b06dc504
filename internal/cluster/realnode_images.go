package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/mlplane/mlplane/hack/images/imagebuild"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// MirroredRegistries are the registries the real node's containerd
// resolves through the cluster's in-process registry, with no fallback to
// the internet: mlplane's images (ghcr.io/mlplane/*) and the upstream
// kube-scheduler config/mlplane-scheduler runs (registry.k8s.io). Every other
// registry resolves to a closed local port.
var MirroredRegistries = []string{"ghcr.io", "registry.k8s.io"}

// Images the real node serves from the in-process registry.
const (
	ImageRepoPrefix = "ghcr.io/mlplane/"
	// PauseImage is the pod sandbox image (podbin without flags).
	PauseImage = ImageRepoPrefix + "pause:local"
	// PodbinImage runs podbin; with args -http=:8080 it answers HTTP.
	PodbinImage = ImageRepoPrefix + "podbin:local"
)

// startRegistry starts the registry the node's containerd pulls from:
// imagebuild's (go-containerregistry) in this process, or, with
// RealNodeOptions.RegistryCommand, as a component that outlives it and
// holds the host lock (Options.Detach).
func (c *Cluster) startRegistry(ctx context.Context) error {
	r := c.real
	if len(r.opts.RegistryCommand) == 0 {
		reg, err := imagebuild.StartRegistry("127.0.0.1:0", "", nil)
		if err != nil {
			return err
		}
		r.registry, r.regAddr = reg, reg.Addr
		return nil
	}
	port, err := c.port(Registry)
	if err != nil {
		return err
	}
	r.regAddr = fmt.Sprintf("127.0.0.1:%d", port)
	comp := c.newComponent(Registry, "", append(r.opts.RegistryCommand[1:], "--addr="+r.regAddr)...)
	comp.Path = r.opts.RegistryCommand[0]
	comp.Files = []*os.File{r.lock.File()}
	comp.ready = runner.HTTPProbe("http://"+r.regAddr+"/v2/", false)
	return c.run(ctx, comp)
}

// RegistryAddr is the real node's registry (127.0.0.1:PORT), "" without a
// real node.
func (c *Cluster) RegistryAddr() string {
	if c.real == nil {
		return ""
	}
	return c.real.regAddr
}

// PushImage pushes img to the real node's registry as repoTag (for example
// "mlplane/webhook:test") and returns the name pods use for it
// (ImageRepoPrefix's registry: "ghcr.io/mlplane/webhook:test").
func (c *Cluster) PushImage(ctx context.Context, repoTag string, img v1.Image) (string, error) {
	if !strings.HasPrefix(repoTag, "mlplane/") {
		return "", fmt.Errorf("image %q: the real node's registry serves mlplane/* only", repoTag)
	}
	ref := "ghcr.io/" + repoTag
	return ref, c.PushImageRef(ctx, ref, img)
}

// PushImageRef pushes img to the real node's registry under the full name
// ref, whose registry must be one of MirroredRegistries
// ("registry.k8s.io/kube-scheduler:v1.37.2"): pods then pull ref as
// written.
func (c *Cluster) PushImageRef(ctx context.Context, ref string, img v1.Image) error {
	local, err := c.localRef(ref)
	if err == nil {
		err = remote.Write(local, img, remote.WithContext(ctx))
	}
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// PushIndexRef is PushImageRef for a multi-platform image index.
func (c *Cluster) PushIndexRef(ctx context.Context, ref string, idx v1.ImageIndex) error {
	local, err := c.localRef(ref)
	if err == nil {
		err = remote.WriteIndex(local, idx, remote.WithContext(ctx))
	}
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// localRef is ref's name in the real node's registry.
func (c *Cluster) localRef(ref string) (name.Reference, error) {
	if c.real == nil || c.real.regAddr == "" {
		return nil, errors.New("no real node: the registry runs with Options.RealNode")
	}
	reg, repo, ok := strings.Cut(ref, "/")
	if !ok || !slices.Contains(MirroredRegistries, reg) {
		return nil, fmt.Errorf("the real node mirrors only %s", strings.Join(MirroredRegistries, ", "))
	}
	return name.ParseReference(c.real.regAddr+"/"+repo, name.Insecure)
}

// BinaryImage is a one-layer image holding the static binary at binPath as
// /NAME, its entrypoint, for this machine's platform.
func BinaryImage(binPath string) (v1.Image, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	base := binaryName(binPath)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: base, Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{"/" + base}
	cf.Config.Env = []string{"PATH=/"}
	return mutate.ConfigFile(img, cf)
}

func binaryName(p string) string {
	return p[strings.LastIndexByte(p, '/')+1:]
}

// pushPodbinImages builds internal/cluster/podbin (static) and pushes it as
// PauseImage and PodbinImage.
func (c *Cluster) pushPodbinImages(ctx context.Context) error {
	root, err := ModuleRoot()
	if err != nil {
		return fmt.Errorf("the real node builds its pause image from the module: %w", err)
	}
	out := c.real.path("podbin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./internal/cluster/podbin")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build podbin: %w\n%s", err, b)
	}
	img, err := BinaryImage(out)
	if err != nil {
		return err
	}
	for _, tag := range []string{PauseImage, PodbinImage} {
		if _, err := c.PushImage(ctx, strings.TrimPrefix(tag, "ghcr.io/"), img); err != nil {
			return err
		}
	}
	return nil
}
