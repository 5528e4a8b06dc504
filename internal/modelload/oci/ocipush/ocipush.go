// Package ocipush pushes a model's files to an OCI registry, in the two
// forms mlplane reads:
//
//   - FormatArtifact (the default): an OCI artifact (image manifest v1.1,
//     artifactType ArtifactType, the empty config) with one layer per file,
//     each titled with the file's slash-separated path
//     (org.opencontainers.image.title), as `oras push REF FILE...` makes it.
//     The model loader's oci:// source reads it (ociMode: Loader).
//   - FormatImage: a container image with the files at the root of one
//     uncompressed tar layer, for a Kubernetes image volume (the webhook's
//     default ociMode, ImageVolume), which mounts the image's filesystem.
//
// Pushes are reproducible: layers in path order, fixed timestamps
// (org.opencontainers.image.created is the Unix epoch unless
// Options.Annotations sets it), so the same files give the same digest.
// For the tests, the end-to-end tests and `make images`.
package ocipush

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"testing/fstest"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Format is the form a model is pushed in.
type Format int

const (
	// FormatArtifact is an artifact with one titled layer per file.
	FormatArtifact Format = iota
	// FormatImage is a container image with the files in one tar layer.
	FormatImage
)

// Defaults of Options.
const (
	// ArtifactType is the artifactType of FormatArtifact manifests.
	ArtifactType = "application/vnd.mlplane.model.v1"
	// FileMediaType is the media type of FormatArtifact's file layers.
	FileMediaType = "application/octet-stream"
)

// Options tune a push. The zero value pushes an artifact anonymously over
// HTTPS (plain HTTP to a loopback registry).
type Options struct {
	Format Format
	// PlainHTTP talks plain HTTP to the registry; on anyway for localhost
	// and loopback registries.
	PlainHTTP bool
	// Username and Password are the registry's Basic credentials (or what
	// its token server takes); none when empty.
	Username, Password string
	// Client sends the requests; default modelload.NewHTTPClient(nil).
	Client *http.Client
	// ArtifactType and MediaType override the defaults for FormatArtifact.
	ArtifactType, MediaType string
	// Annotations are added to the manifest.
	Annotations map[string]string
	// Platform is FormatImage's "os/arch"; default linux/GOARCH of this
	// program.
	Platform string
}

// PushDir pushes the regular files under dir (recursively) to ref
// (REGISTRY/REPOSITORY:TAG, or @DIGEST to check the digest) and returns the
// manifest's digest ("sha256:..."). Symlinks and other non-regular files
// are refused.
func PushDir(ctx context.Context, ref, dir string, o Options) (string, error) {
	return Push(ctx, ref, os.DirFS(dir), o)
}

// PushFiles pushes files (slash-separated path to content, as a
// modeltest.Model) to ref; see PushDir.
func PushFiles(ctx context.Context, ref string, files map[string][]byte, o Options) (string, error) {
	m := fstest.MapFS{}
	for p, b := range files {
		m[p] = &fstest.MapFile{Data: b, Mode: 0o644}
	}
	return Push(ctx, ref, m, o)
}

// Push pushes the regular files of fsys to ref; see PushDir.
func Push(ctx context.Context, ref string, fsys fs.FS, o Options) (string, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("reference %q: %w", ref, err)
	}
	if r.Reference == "" {
		return "", fmt.Errorf("reference %q: no tag or digest", ref)
	}
	paths, err := regularFiles(fsys)
	if err != nil {
		return "", err
	}
	if o.Client == nil {
		o.Client = modelload.NewHTTPClient(nil)
	}
	client := &auth.Client{Client: o.Client, Cache: auth.NewCache(), Header: http.Header{"User-Agent": {"mlplane-ocipush"}}}
	if o.Username != "" || o.Password != "" {
		client.Credential = auth.StaticCredential(r.Registry, auth.Credential{Username: o.Username, Password: o.Password})
	}
	repo := &remote.Repository{Client: client, Reference: r, PlainHTTP: o.PlainHTTP || modelload.IsLoopbackHost(r.Registry)}

	annotations := map[string]string{ocispec.AnnotationCreated: time.Unix(0, 0).UTC().Format(time.RFC3339)}
	for k, v := range o.Annotations {
		annotations[k] = v
	}
	var desc ocispec.Descriptor
	switch o.Format {
	case FormatArtifact:
		desc, err = pushArtifact(ctx, repo, fsys, paths, annotations, o)
	case FormatImage:
		desc, err = pushImage(ctx, repo, fsys, paths, annotations, o)
	default:
		err = fmt.Errorf("unknown format %d", o.Format)
	}
	if err != nil {
		return "", fmt.Errorf("pushing to %s: %w", ref, err)
	}
	if d, derr := r.Digest(); derr == nil {
		if d != desc.Digest {
			return "", fmt.Errorf("pushing to %s: the files make manifest %s", ref, desc.Digest)
		}
	} else if err := repo.Tag(ctx, desc, r.Reference); err != nil {
		return "", fmt.Errorf("tagging %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}

// regularFiles lists fsys's regular files, sorted.
func regularFiles(fsys fs.FS) ([]string, error) {
	var paths []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		paths = append(paths, p)
		return nil
	})
	sort.Strings(paths)
	return paths, err
}

func pushArtifact(ctx context.Context, repo *remote.Repository, fsys fs.FS, paths []string, annotations map[string]string, o Options) (ocispec.Descriptor, error) {
	mt, at := o.MediaType, o.ArtifactType
	if mt == "" {
		mt = FileMediaType
	}
	if at == "" {
		at = ArtifactType
	}
	var layers []ocispec.Descriptor
	for _, p := range paths {
		d, err := describe(fsys, p, mt)
		if err != nil {
			return d, err
		}
		if err := pushBlob(ctx, repo, d, func() (io.ReadCloser, error) { return fsys.Open(p) }); err != nil {
			return d, fmt.Errorf("%s: %w", p, err)
		}
		d.Annotations = map[string]string{ocispec.AnnotationTitle: p}
		layers = append(layers, d)
	}
	if len(layers) == 0 {
		return ocispec.Descriptor{}, errors.New("no files to push")
	}
	return oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, at, oras.PackManifestOptions{
		Layers: layers, ManifestAnnotations: annotations,
	})
}

// describe hashes one file.
func describe(fsys fs.FS, p, mediaType string) (ocispec.Descriptor, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", p, err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), Size: n}, nil
}

// pushBlob uploads a blob unless the registry has it.
func pushBlob(ctx context.Context, repo *remote.Repository, d ocispec.Descriptor, open func() (io.ReadCloser, error)) error {
	if ok, err := repo.Exists(ctx, d); err == nil && ok {
		return nil
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := repo.Push(ctx, d, rc); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return err
	}
	return nil
}

func pushImage(ctx context.Context, repo *remote.Repository, fsys fs.FS, paths []string, annotations map[string]string, o Options) (ocispec.Descriptor, error) {
	platform := o.Platform
	if platform == "" {
		platform = "linux/" + runtime.GOARCH
	}
	osName, arch, ok := strings.Cut(platform, "/")
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("platform %q: want OS/ARCH", platform)
	}
	// The layer goes to a temporary file first: its digest is needed before
	// the upload, and models are too large for memory.
	tmp, err := os.CreateTemp("", "ocipush-layer-*.tar")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if err := writeTar(io.MultiWriter(tmp, h), fsys, paths); err != nil {
		return ocispec.Descriptor{}, err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), Size: size}
	if err := pushBlob(ctx, repo, layer, func() (io.ReadCloser, error) {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return io.NopCloser(tmp), nil
	}); err != nil {
		return layer, err
	}

	epoch := time.Unix(0, 0).UTC()
	cfg, err := json.Marshal(ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{OS: osName, Architecture: arch},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	})
	if err != nil {
		return layer, err
	}
	cfgDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfg)
	if err := pushBlob(ctx, repo, cfgDesc, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cfg)), nil }); err != nil {
		return cfgDesc, err
	}
	return oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "", oras.PackManifestOptions{
		Layers: []ocispec.Descriptor{layer}, ConfigDescriptor: &cfgDesc, ManifestAnnotations: annotations,
	})
}

// writeTar writes the files, with their parent directories, as a
// reproducible tar (fixed times, owners and modes).
func writeTar(w io.Writer, fsys fs.FS, paths []string) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	epoch := time.Unix(0, 0)
	for _, p := range paths {
		var parents []string
		for d := path.Dir(p); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: parents[i] + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Size: st.Size(), Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX})
		}
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return tw.Close()
}
