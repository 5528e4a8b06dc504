package oci_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
	"github.com/mlplane/mlplane/internal/modelload/oci"
	"github.com/mlplane/mlplane/internal/modelload/oci/ocipush"
)

// testRegistry is go-containerregistry's in-process registry on loopback,
// with optional Basic auth, a switch that makes it ignore Range headers,
// and a count of blob GETs.
type testRegistry struct {
	*httptest.Server
	host          string // 127.0.0.1:PORT
	user, pass    string
	ignoreRange   atomic.Bool
	blobGets      atomic.Int64
	manifestFetch atomic.Int64
}

func newRegistry(t *testing.T, user, pass string) *testRegistry {
	t.Helper()
	r := &testRegistry{user: user, pass: pass}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.user || p != r.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.blobGets.Add(1)
			if r.ignoreRange.Load() {
				req.Header.Del("Range")
			}
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
			r.manifestFetch.Add(1)
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.host = strings.TrimPrefix(r.URL, "http://")
	return r
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func kindOf(err error) modelload.Kind { return modelload.Classify(err).Kind }

func newSource(t *testing.T, uri string, e map[string]string) modelload.Source {
	t.Helper()
	src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{Getenv: env(e)})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func push(t *testing.T, ref string, m modeltest.Model, o ocipush.Options) string {
	t.Helper()
	d, err := ocipush.PushFiles(context.Background(), ref, m, o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkListing checks lst against m, and reads several ranges of every file;
// it returns how many of those reads asked for bytes (n != 0).
func checkListing(t *testing.T, src modelload.Source, lst *modelload.Listing, m modeltest.Model) (reads int64) {
	t.Helper()
	if len(lst.Files) != len(m) {
		t.Fatalf("listed %d files, want %d: %+v", len(lst.Files), len(m), lst.Files)
	}
	for _, f := range lst.Files {
		want, ok := m[f.Path]
		if !ok {
			t.Errorf("listed %q, not in the model", f.Path)
			continue
		}
		if f.Size != int64(len(want)) || f.SHA256 != modeltest.SHA256(want) || f.Key != "sha256:"+f.SHA256 {
			t.Errorf("%s: size %d sha256 %s key %s; want size %d sha256 %s", f.Path, f.Size, f.SHA256, f.Key, len(want), modeltest.SHA256(want))
		}
		size := int64(len(want))
		for _, r := range [][2]int64{{0, -1}, {0, size}, {0, 1}, {size / 2, -1}, {size / 3, size / 3}, {size - 1, 1}, {0, 0}} {
			off, n := r[0], r[1]
			if size == 0 && (off != 0 || n > 0) {
				continue
			}
			if n != 0 {
				reads++
			}
			rc, err := src.Open(context.Background(), f, off, n)
			if err != nil {
				t.Errorf("%s: Open(%d, %d): %v", f.Path, off, n, err)
				continue
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			end := size
			if n >= 0 {
				end = off + n
			}
			if err != nil || !bytes.Equal(got, want[off:end]) {
				t.Errorf("%s: Open(%d, %d): %d bytes, err %v; want bytes [%d, %d)", f.Path, off, n, len(got), err, off, end)
			}
		}
	}
	return reads
}

func TestListAndOpen(t *testing.T) {
	reg := newRegistry(t, "", "")
	m := modeltest.Small()
	dgst := push(t, reg.host+"/models/small:v1", m, ocipush.Options{})
	if again := push(t, reg.host+"/models/small:v2", m, ocipush.Options{}); again != dgst {
		t.Errorf("pushing the same files again gave %s, want the same digest %s", again, dgst)
	}
	for _, uri := range []string{"oci://" + reg.host + "/models/small:v1", "oci://" + reg.host + "/models/small@" + dgst} {
		src := newSource(t, uri, nil)
		lst, err := src.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if lst.Revision != dgst {
			t.Errorf("%s: revision %s, want the manifest digest %s", uri, lst.Revision, dgst)
		}
		before := reg.blobGets.Load()
		reads := checkListing(t, src, lst, m)
		// One request per Open that reads bytes, none for n == 0.
		if got := reg.blobGets.Load() - before; got != reads || reads < 30 {
			t.Errorf("%d blob GETs for %d reads, want one each", got, reads)
		}
	}
}

func TestIndex(t *testing.T) {
	reg := newRegistry(t, "", "")
	m := modeltest.Small()
	other := modeltest.New(3, map[string]int{"arm.bin": 10})
	amd := push(t, reg.host+"/models/multi:amd64", m, ocipush.Options{})
	arm := push(t, reg.host+"/models/multi:arm64", other, ocipush.Options{})
	repo, err := remote.NewRepository(reg.host + "/models/multi")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	desc := func(d, arch string) ocispec.Descriptor {
		r, err := repo.Resolve(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: r.MediaType, Digest: r.Digest, Size: r.Size, Platform: &ocispec.Platform{OS: "linux", Architecture: arch}}
	}
	idx, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{desc(arm, "arm64"), desc(amd, "amd64")},
	})
	if err != nil {
		t.Fatal(err)
	}
	idxDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, idx)
	if err := repo.PushReference(context.Background(), idxDesc, bytes.NewReader(idx), "multi"); err != nil {
		t.Fatal(err)
	}
	src := newSource(t, "oci://"+reg.host+"/models/multi:multi", nil)
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if lst.Revision != idxDesc.Digest.String() {
		t.Errorf("revision %s, want the index digest %s", lst.Revision, idxDesc.Digest)
	}
	checkListing(t, src, lst, m)
}

func TestNotFound(t *testing.T) {
	reg := newRegistry(t, "", "")
	push(t, reg.host+"/models/small:v1", modeltest.Small(), ocipush.Options{})
	ctx := context.Background()
	for _, uri := range []string{
		"oci://" + reg.host + "/models/nothing:v1",
		"oci://" + reg.host + "/models/small:v9",
		"oci://" + reg.host + "/models/small@sha256:" + strings.Repeat("0", 64),
	} {
		_, err := newSource(t, uri, nil).List(ctx)
		if k := kindOf(err); k != modelload.KindNotFound {
			t.Errorf("%s: kind %v, want KindNotFound: %v", uri, k, err)
		}
	}
	src := newSource(t, "oci://"+reg.host+"/models/small:v1", nil)
	_, err := src.Open(ctx, modelload.File{Path: "x", Size: 10, Key: "sha256:" + strings.Repeat("1", 64)}, 2, 5)
	if k := kindOf(err); k != modelload.KindNotFound {
		t.Errorf("Open of a missing blob: kind %v, want KindNotFound: %v", k, err)
	}
}

func TestAuth(t *testing.T) {
	reg := newRegistry(t, "loader", "s3cret-pass")
	m := modeltest.Small()
	uri := "oci://" + reg.host + "/models/private:v1"
	if _, err := ocipush.PushFiles(context.Background(), reg.host+"/models/private:v1", m, ocipush.Options{}); err == nil {
		t.Fatal("an anonymous push to the Basic-auth registry succeeded")
	}
	push(t, reg.host+"/models/private:v1", m, ocipush.Options{Username: "loader", Password: "s3cret-pass"})
	ctx := context.Background()

	for name, e := range map[string]map[string]string{
		"anonymous":   {"HOME": t.TempDir()},
		"wrong":       {oci.EnvUsername: "loader", oci.EnvPassword: "wrong-pass"},
		"other-host":  {oci.EnvDockerConfig: dockerConfig(t, "registry.example.com", "loader", "s3cret-pass")},
		"wrong-in-dc": {oci.EnvDockerConfig: dockerConfig(t, reg.host, "loader", "nope")},
	} {
		_, err := newSource(t, uri, e).List(ctx)
		if k := kindOf(err); k != modelload.KindAuth {
			t.Errorf("%s: kind %v, want KindAuth: %v", name, k, err)
		} else if modelload.Classify(err).Retry {
			t.Errorf("%s: refused credentials are retryable: %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
	}

	home := t.TempDir()
	dockerConfigAt(t, filepath.Join(home, ".docker"), reg.host, "loader", "s3cret-pass")
	for name, e := range map[string]map[string]string{
		"env":           {oci.EnvUsername: "loader", oci.EnvPassword: "s3cret-pass"},
		"docker config": {oci.EnvDockerConfig: dockerConfig(t, reg.host, "loader", "s3cret-pass")},
		"home":          {"HOME": home},
	} {
		src := newSource(t, uri, e)
		lst, err := src.List(ctx)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		checkListing(t, src, lst, m)
	}

	_, err := modelload.NewSource(ctx, uri, modelload.SourceOptions{Getenv: env(map[string]string{oci.EnvUsername: "loader"})})
	if k := kindOf(err); k != modelload.KindUsage {
		t.Errorf("OCI_USERNAME alone: kind %v, want KindUsage: %v", k, err)
	}
}

// dockerConfig writes a Docker config directory with credentials for host
// and returns it (for DOCKER_CONFIG).
func dockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "docker")
	dockerConfigAt(t, dir, host, user, pass)
	return dir
}

func dockerConfigAt(t *testing.T, dir, host, user, pass string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRefused(t *testing.T) {
	reg := newRegistry(t, "", "")
	ctx := context.Background()
	m := modeltest.Small()
	push(t, reg.host+"/models/image:v1", m, ocipush.Options{Format: ocipush.FormatImage})

	repo, err := remote.NewRepository(reg.host + "/models/crafted")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	blob := []byte("layer bytes")
	bd := content.NewDescriptorFromBytes("application/octet-stream", blob)
	if err := repo.Push(ctx, bd, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	layer := func(mt string, ann map[string]string) ocispec.Descriptor {
		d := bd
		d.MediaType = mt
		d.Annotations = ann
		return d
	}
	for tag, l := range map[string]ocispec.Descriptor{
		"untitled":  layer("application/octet-stream", nil),
		"orasdir":   layer(ocispec.MediaTypeImageLayerGzip, map[string]string{ocispec.AnnotationTitle: "model", "io.deis.oras.content.unpack": "true"}),
		"modelpack": layer("application/vnd.cncf.model.weight.v1.tar", map[string]string{ocispec.AnnotationTitle: "model.safetensors"}),
		"escape":    layer("application/octet-stream", map[string]string{ocispec.AnnotationTitle: "../etc/passwd"}),
	} {
		d, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.test", oras.PackManifestOptions{Layers: []ocispec.Descriptor{l}})
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Tag(ctx, d, tag); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		uri  string
		kind modelload.Kind
		want string
	}{
		{"oci://" + reg.host + "/models/image:v1", modelload.KindUsage, "is a container image"},
		{"oci://" + reg.host + "/models/crafted:untitled", modelload.KindUsage, "has no org.opencontainers.image.title"},
		{"oci://" + reg.host + "/models/crafted:orasdir", modelload.KindUsage, "oras push REF DIR"},
		{"oci://" + reg.host + "/models/crafted:modelpack", modelload.KindUsage, "ModelPack archive"},
		{"oci://" + reg.host + "/models/crafted:escape", modelload.KindIntegrity, "escapes"},
	} {
		_, err := newSource(t, tc.uri, nil).List(ctx)
		if k := kindOf(err); k != tc.kind || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("%s: kind %v, error %v; want %v saying %q", tc.uri, k, err, tc.kind, tc.want)
		}
	}

	// ModelPack's raw layers are files, named by org.cncf.model.filepath.
	raw := layer("application/vnd.cncf.model.weight.v1.raw", map[string]string{ocispec.AnnotationTitle: "w.bin", oci.AnnotationFilepath: "sub/w.bin"})
	d, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.cncf.model.manifest.v1+json", oras.PackManifestOptions{Layers: []ocispec.Descriptor{raw}})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, d, "raw"); err != nil {
		t.Fatal(err)
	}
	src := newSource(t, "oci://"+reg.host+"/models/crafted:raw", nil)
	lst, err := src.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkListing(t, src, lst, modeltest.Model{"sub/w.bin": blob})
}

func TestRegistryWithoutRanges(t *testing.T) {
	reg := newRegistry(t, "", "")
	m := modeltest.New(4, map[string]int{"w.bin": 1000})
	push(t, reg.host+"/models/w:v1", m, ocipush.Options{})
	reg.ignoreRange.Store(true)
	src := newSource(t, "oci://"+reg.host+"/models/w:v1", nil)
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := lst.Files[0]
	_, err = src.Open(context.Background(), f, 10, 20)
	if e := modelload.Classify(err); e.Kind != modelload.KindNetwork || e.Retry || !strings.Contains(err.Error(), "ignored the Range") {
		t.Errorf("Open(10, 20) from a registry without ranges: %v (kind %v, retry %v); want a non-retryable KindNetwork error", err, e.Kind, e.Retry)
	}
	// From offset 0 the whole blob answers, cut to n.
	rc, err := src.Open(context.Background(), f, 0, 20)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(b, m["w.bin"][:20]) {
		t.Errorf("Open(0, 20): %d bytes, want the first 20", len(b))
	}
}

func TestParseURI(t *testing.T) {
	for _, uri := range []string{
		"oci://ghcr.io/org/model",   // no tag
		"oci://ghcr.io",             // no repository
		"oci://ghcr.io/Org/Model:v", // upper case
		"oci://ghcr.io/org/model@sha256:abc",
	} {
		_, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{Getenv: env(nil)})
		if k := kindOf(err); k != modelload.KindUsage {
			t.Errorf("%s: kind %v, want KindUsage: %v", uri, k, err)
		}
	}
	for reg, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1:5000": true, "[::1]:5000": true, "127.1.2.3": true,
		"ghcr.io": false, "10.0.0.1:5000": false, "localhost.example.com": false,
	} {
		if got := modelload.IsLoopbackHost(reg); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", reg, got, want)
		}
	}
}

func TestFetch(t *testing.T) {
	reg := newRegistry(t, "", "")
	m := modeltest.Small()
	push(t, reg.host+"/models/small:v1", m, ocipush.Options{})
	uri := "oci://" + reg.host + "/models/small:v1"
	src := newSource(t, uri, nil)
	dest := t.TempDir()
	res, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: uri, Dest: dest, ChunkSize: 256 << 10, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if res.Fetched != m.Size() {
		t.Errorf("fetched %d bytes, want %d", res.Fetched, m.Size())
	}
}
