package ocipush_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/mlplane/mlplane/internal/modelload/modeltest"
	"github.com/mlplane/mlplane/internal/modelload/oci/ocipush"
)

func newRegistry(t *testing.T) string {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// fetchManifest reads the manifest ref names; fetchBlob reads a blob.
func fetchManifest(t *testing.T, repo *remote.Repository, ref string) (ocispec.Descriptor, []byte) {
	t.Helper()
	d, rc, err := repo.FetchReference(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := content.ReadAll(rc, d)
	if err != nil {
		t.Fatal(err)
	}
	return d, b
}

func fetchBlob(t *testing.T, repo *remote.Repository, d ocispec.Descriptor) []byte {
	t.Helper()
	b, err := content.FetchAll(context.Background(), repo.Blobs(), d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPushArtifact(t *testing.T) {
	host := newRegistry(t)
	m := modeltest.Small()
	dgst, err := ocipush.PushFiles(context.Background(), host+"/m/small:v1", m, ocipush.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := remote.NewRepository(host + "/m/small")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	d, b := fetchManifest(t, repo, "v1")
	if d.Digest.String() != dgst {
		t.Errorf("tag v1 is %s, Push returned %s", d.Digest, dgst)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	if man.ArtifactType != ocipush.ArtifactType || man.Config.MediaType != ocispec.MediaTypeEmptyJSON {
		t.Errorf("artifactType %q config %q", man.ArtifactType, man.Config.MediaType)
	}
	if len(man.Layers) != len(m) {
		t.Fatalf("%d layers, want %d", len(man.Layers), len(m))
	}
	for i, l := range man.Layers {
		p := l.Annotations[ocispec.AnnotationTitle]
		if p != m.Paths()[i] {
			t.Errorf("layer %d is titled %q, want %q (path order)", i, p, m.Paths()[i])
		}
		if got := fetchBlob(t, repo, l); !bytes.Equal(got, m[p]) {
			t.Errorf("layer %q: %d bytes differ from the file's %d", p, len(got), len(m[p]))
		}
	}

	// The same files from a directory give the same manifest; a digest
	// reference checks it.
	dir := t.TempDir()
	for p, b := range m {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := ocipush.PushDir(context.Background(), host+"/m/small@"+dgst, dir, ocipush.Options{}); err != nil || got != dgst {
		t.Errorf("PushDir by digest: %s, %v; want %s", got, err, dgst)
	}
	if err := os.WriteFile(filepath.Join(dir, "extra"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ocipush.PushDir(context.Background(), host+"/m/small@"+dgst, dir, ocipush.Options{}); err == nil {
		t.Error("PushDir of other files to the digest succeeded")
	}
	if err := os.Symlink("config.json", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := ocipush.PushDir(context.Background(), host+"/m/small:v2", dir, ocipush.Options{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("PushDir with a symlink: %v, want a refusal", err)
	}
}

func TestPushImage(t *testing.T) {
	host := newRegistry(t)
	m := modeltest.Small()
	if _, err := ocipush.PushFiles(context.Background(), host+"/m/img:v1", m, ocipush.Options{Format: ocipush.FormatImage}); err != nil {
		t.Fatal(err)
	}
	repo, err := remote.NewRepository(host + "/m/img")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	_, b := fetchManifest(t, repo, "v1")
	var man ocispec.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	if man.Config.MediaType != ocispec.MediaTypeImageConfig || len(man.Layers) != 1 || man.Layers[0].MediaType != ocispec.MediaTypeImageLayer {
		t.Fatalf("not a one-layer image: %s", b)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(fetchBlob(t, repo, man.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
		t.Errorf("config %+v: want linux/%s and the layer's diff ID", cfg, runtime.GOARCH)
	}
	got := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(fetchBlob(t, repo, man.Layers[0])))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			got[h.Name], _ = io.ReadAll(tr)
		} else if h.Typeflag != tar.TypeDir {
			t.Errorf("entry %s of type %c", h.Name, h.Typeflag)
		}
	}
	if len(got) != len(m) {
		t.Errorf("the layer has %d files, want %d", len(got), len(m))
	}
	for p, w := range m {
		if !bytes.Equal(got[p], w) {
			t.Errorf("%s: %d bytes in the layer, want %d", p, len(got[p]), len(w))
		}
	}
}
