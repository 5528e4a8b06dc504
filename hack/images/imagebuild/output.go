package imagebuild

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/mlplane/mlplane/internal/modelload"
)

// Annotations of index.json entries that name an image: OCI's, and the
// one containerd's importer reads first.
const (
	AnnotationRefName    = "org.opencontainers.image.ref.name"
	AnnotationContainerd = "io.containerd.image.name"
)

// WriteLayout writes built as one OCI image layout in dir, replacing the
// layout there: index.json lists each image's index once per name.
func WriteLayout(dir string, built []Built) error {
	for _, f := range []string{"index.json", "oci-layout", "blobs"} {
		if err := os.RemoveAll(filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	for _, b := range built {
		for _, ref := range b.Refs {
			if err := p.AppendIndex(b.Index, layout.WithAnnotations(map[string]string{AnnotationRefName: ref, AnnotationContainerd: ref})); err != nil {
				return fmt.Errorf("%s: %w", ref, err)
			}
		}
	}
	return nil
}

// PlatformImage is the image of idx for plat.
func PlatformImage(idx v1.ImageIndex, plat v1.Platform) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == plat.OS && d.Platform.Architecture == plat.Architecture {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no image for %s", plat)
}

// WriteArchive writes plat's image of every built image into one
// docker-archive tarball, under all their names, for `ctr -n k8s.io
// images import FILE` (or `docker load`). Images without plat are left out
// and returned.
func WriteArchive(file string, built []Built, plat v1.Platform) (missing []string, err error) {
	refs := map[name.Reference]v1.Image{}
	for _, b := range built {
		img, err := PlatformImage(b.Index, plat)
		if err != nil {
			missing = append(missing, b.Image.Name)
			continue
		}
		for _, r := range b.Refs {
			ref, err := name.ParseReference(r)
			if err != nil {
				return nil, err
			}
			refs[ref] = img
		}
	}
	if len(refs) == 0 {
		return missing, fmt.Errorf("no image for %s", plat)
	}
	return missing, tarball.MultiRefWriteToFile(file, refs)
}

// Push writes idx to ref: plain HTTP for a loopback registry, credentials
// from the Docker config (`docker login`, `crane auth login`) and its
// helpers otherwise.
func Push(ctx context.Context, idx v1.ImageIndex, ref string) error {
	r, err := parseRef(ref)
	if err != nil {
		return err
	}
	return remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
}

// PushAll pushes each built image to dest/<Image.Name>:tag.
func PushAll(ctx context.Context, built []Built, dest, tag string) ([]string, error) {
	var refs []string
	for _, b := range built {
		ref := dest + "/" + b.Image.Name + ":" + tag
		if err := Push(ctx, b.Index, ref); err != nil {
			return refs, fmt.Errorf("push %s: %w", ref, err)
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// parseRef parses a reference, insecure (plain HTTP) only for a loopback
// registry.
func parseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if modelload.IsLoopbackHost(r.Context().RegistryStr()) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// Size is an image's compressed size: manifest, config and layers, as a
// registry stores it.
func Size(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}
