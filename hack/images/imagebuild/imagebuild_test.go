package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/mlplane/mlplane/internal/manifests"
)

// pause is the image the tests build: the smallest of the set.
func pause(t *testing.T) Image {
	t.Helper()
	ims, err := Select([]string{"pause"})
	if err != nil {
		t.Fatal(err)
	}
	return ims[0]
}

func buildPause(t *testing.T) Built {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the pause binary twice (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	built, err := Build(ctx, []Image{pause(t)}, Options{Revision: "0123456789abcdef", Tag: "v9.9.9", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return built[0]
}

// files reads an image's flattened filesystem: path to header and content.
func files(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + strings.TrimSuffix(h.Name, "/")
		hdrs[p] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			data[p] = b
		}
	}
	return hdrs, data
}

// TestBuildPause builds the pause image for both platforms into an OCI
// layout and checks what a kubelet and containerd rely on: two platforms,
// the user, the entrypoint, a static binary, the base files, the labels,
// fixed timestamps, and the same digest from a second build.
func TestBuildPause(t *testing.T) {
	b := buildPause(t)
	dir := t.TempDir()
	if err := WriteLayout(dir, []Built{b}); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, d := range tm.Manifests {
		refs = append(refs, d.Annotations[AnnotationRefName])
	}
	if want := []string{"ghcr.io/mlplane/pause:v9.9.9", PauseRef}; strings.Join(refs, " ") != strings.Join(want, " ") {
		t.Errorf("layout names %q, want %q", refs, want)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, d := range im.Manifests {
		plats = append(plats, d.Platform.String())
	}
	if got := strings.Join(plats, " "); got != "linux/amd64 linux/arm64/v8" {
		t.Errorf("platforms %s, want linux/amd64 linux/arm64/v8", got)
	}

	for _, plat := range DefaultPlatforms {
		img, err := PlatformImage(idx, plat)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != plat.Architecture || cf.OS != "linux" {
			t.Errorf("%s: config says %s/%s", plat, cf.OS, cf.Architecture)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", plat, cf.Config.User)
		}
		if strings.Join(cf.Config.Entrypoint, " ") != "/pause" {
			t.Errorf("%s: entrypoint %q, want [/pause]", plat, cf.Config.Entrypoint)
		}
		for k, v := range map[string]string{
			"org.opencontainers.image.source":   Source,
			"org.opencontainers.image.revision": "0123456789abcdef",
			"org.opencontainers.image.version":  "v9.9.9",
		} {
			if cf.Config.Labels[k] != v {
				t.Errorf("%s: label %s=%q, want %q", plat, k, cf.Config.Labels[k], v)
			}
		}
		if !cf.Created.Time.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: created %s, want the epoch", plat, cf.Created)
		}

		hdrs, data := files(t, img)
		for p, h := range hdrs {
			if !h.ModTime.Equal(time.Unix(0, 0)) {
				t.Errorf("%s: %s has mtime %s", plat, p, h.ModTime)
			}
		}
		if h := hdrs["/pause"]; h == nil || h.Mode&0o777 != 0o755 || h.Uid != 0 {
			t.Fatalf("%s: /pause: %+v, want a root-owned 0755 file", plat, h)
		}
		f, err := elf.NewFile(bytes.NewReader(data["/pause"]))
		if err != nil {
			t.Fatalf("%s: /pause: %v", plat, err)
		}
		if interp, _ := interpreter(f); interp != "" {
			t.Errorf("%s: /pause asks for %s, want a static binary", plat, interp)
		}
		if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[plat.Architecture]; f.Machine != want {
			t.Errorf("%s: /pause is for %s", plat, f.Machine)
		}
		if !strings.Contains(string(data["/etc/passwd"]), "nonroot:x:65532:65532:") || !strings.Contains(string(data["/etc/group"]), "nonroot:x:65532:") {
			t.Errorf("%s: passwd/group lack 65532:\n%s%s", plat, data["/etc/passwd"], data["/etc/group"])
		}
		if h := hdrs["/tmp"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode&0o7777 != 0o1777 {
			t.Errorf("%s: /tmp: %+v, want a 1777 directory", plat, h)
		}
		if h := hdrs["/home/nonroot"]; h == nil || h.Uid != 65532 {
			t.Errorf("%s: /home/nonroot: %+v, want owned by 65532", plat, h)
		}
		if _, ok := data["/etc/ssl/certs/ca-certificates.crt"]; ok {
			t.Errorf("%s: pause has CA certificates", plat)
		}
	}

	again := buildPause(t)
	d1, err := b.Index.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := again.Index.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("two builds: %s and %s, want the same digest", d1, d2)
	}

	// The docker archive that `ctr images import` reads: both names.
	tarFile := filepath.Join(dir, "images.tar")
	if _, err := WriteArchive(tarFile, []Built{b}, DefaultPlatforms[0]); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"ghcr.io/mlplane/pause:v9.9.9", PauseRef} {
		tag, err := name.NewTag(ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(tarFile, &tag)
		if err != nil {
			t.Fatalf("archive: %s: %v", ref, err)
		}
		// A docker archive rewrites the manifest; the config (the image
		// ID) is the same.
		want, _ := PlatformImage(b.Index, DefaultPlatforms[0])
		if dg, wg := configName(t, img), configName(t, want); dg != wg {
			t.Errorf("archive: %s has config %s, want %s", ref, dg, wg)
		}
	}
}

func configName(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPushAndPull pushes the pause image to the loopback registry, as
// `images --push` does, loads a layout into it, as `images registry
// --load` does, and pulls both back.
func TestPushAndPull(t *testing.T) {
	b := buildPause(t)
	r, err := StartRegistry("127.0.0.1:0", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	ctx := context.Background()
	refs, err := PushAll(ctx, []Built{b}, r.Addr+"/mlplane", "v9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	if want := r.Addr + "/mlplane/pause:v9.9.9"; len(refs) != 1 || refs[0] != want {
		t.Fatalf("pushed %q, want %s", refs, want)
	}
	wantDigest, err := b.Index.Digest()
	if err != nil {
		t.Fatal(err)
	}
	pull := func(ref string) {
		t.Helper()
		r, err := parseRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(r, remote.WithContext(ctx))
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if d, err := idx.Digest(); err != nil || d != wantDigest {
			t.Errorf("pull %s: %s (%v), want %s", ref, d, err, wantDigest)
		}
		img, err := PlatformImage(idx, DefaultPlatforms[1])
		if err != nil {
			t.Fatal(err)
		}
		if _, data := files(t, img); len(data["/pause"]) == 0 {
			t.Errorf("pull %s: no /pause", ref)
		}
	}
	pull(refs[0])

	dir := t.TempDir()
	if err := WriteLayout(dir, []Built{b}); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadLayout(ctx, dir, r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{r.Addr + "/mlplane/pause:v9.9.9", r.Addr + "/pause:local"}; strings.Join(loaded, " ") != strings.Join(want, " ") {
		t.Errorf("loaded %q, want %q", loaded, want)
	}
	pull(r.Addr + "/pause:local")
}

func TestRegistryLoopbackOnly(t *testing.T) {
	for _, addr := range []string{":5000", "0.0.0.0:5000", "[::]:5000", "192.0.2.1:5000", "localhost:5000", "registry.example.com:5000"} {
		if r, err := StartRegistry(addr, "", nil); err == nil {
			r.Close(context.Background())
			t.Errorf("StartRegistry(%q) serves; want it refused", addr)
		}
	}
	r, err := StartRegistry("[::1]:0", "", nil)
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	r.Close(context.Background())
}

// TestConfigNames keeps config/ and `make images` on the same names: every
// ghcr.io/mlplane image the manifests name is DefaultRepo/<Image.Name>:DefaultTag,
// and the four components' images are all named.
func TestConfigNames(t *testing.T) {
	configDir, err := manifests.ConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	valid := map[string]bool{}
	for _, im := range Images {
		valid[DefaultRepo+"/"+im.Name+":"+DefaultTag] = true
	}
	re := regexp.MustCompile(regexp.QuoteMeta(DefaultRepo) + `/[^\s"'` + "`" + `]+`)
	seen := map[string]bool{}
	err = filepath.WalkDir(configDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, ref := range re.FindAllString(string(b), -1) {
			seen[ref] = true
			if !valid[ref] {
				t.Errorf("%s names %s, which `make images` does not build (it builds %s/<image>:%s)", p, ref, DefaultRepo, DefaultTag)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"webhook", "extender", "node-agent", "model-loader"} {
		if ref := DefaultRepo + "/" + n + ":" + DefaultTag; !seen[ref] {
			t.Errorf("config/ never names %s", ref)
		}
	}
}

func TestLayerTar(t *testing.T) {
	b, err := layerTar([]entry{file("/usr/local/bin/x", 0o755, []byte("x")), symlink("/lib", "usr/lib"), dir("/tmp", 0o1777)}, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Name)
	}
	want := []string{"lib", "tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/x"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("entries %q, want %q (parents added, sorted)", got, want)
	}
	for _, bad := range [][]entry{
		{file("/a", 0o644, nil), file("/a", 0o644, nil)},
		{file("relative", 0o644, nil)},
		{file("/a/../b", 0o644, nil)},
		{file("/a", 0o644, nil), file("/a/b", 0o644, nil)},
	} {
		if _, err := layerTar(bad, time.Unix(0, 0)); err == nil {
			t.Errorf("layerTar(%v): no error", bad)
		}
	}
}

// TestCRuntime builds a small cgo program that dlopens a library, as the
// node agent dlopens libnvidia-ml, lays out its C runtime as the node
// agent's image gets it, and runs the program with nothing but that
// runtime: the image's own dynamic loader and library path.
func TestCRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a cgo program (-short)")
	}
	cc := cCompiler(context.Background(), "go", runtime.GOARCH, runtime.GOARCH)
	if cc == "" || runtime.GOOS != "linux" {
		t.Skip("no C compiler for this machine")
	}
	src := t.TempDir()
	prog := `package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
static int has(const char *name) { void *h = dlopen(name, RTLD_NOW); return h != NULL; }
*/
import "C"
import "fmt"

func main() {
	name := C.CString("libm.so.6")
	fmt.Println("dlopen libm.so.6:", C.has(name) == 1)
}
`
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module cprog\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "cprog")
	cmd := exec.Command("go", "build", "-trimpath", "-tags=netgo,osusergo", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CC="+cc, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	entries, names, err := cRuntime(context.Background(), cc, bin, []string{"libm.so.6"})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	t.Logf("C runtime: %s", strings.Join(names, " "))
	for _, n := range []string{"libc.so.6", "libm.so.6"} {
		if i := sort.SearchStrings(names, n); i == len(names) || names[i] != n {
			t.Errorf("C runtime %q lacks %s", names, n)
		}
	}

	// Lay it out on disk as the image's root, then run the program with
	// that root's loader, libraries only from there.
	root := t.TempDir()
	f, _ := elf.Open(bin)
	interp, _ := interpreter(f)
	f.Close()
	var libDir string
	for _, e := range entries {
		p := filepath.Join(root, e.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch e.Type {
		case tar.TypeReg:
			err = os.WriteFile(p, e.Data, os.FileMode(e.Mode))
			if strings.HasPrefix(filepath.Base(p), "libc.so") {
				libDir = filepath.Dir(p)
			}
		case tar.TypeSymlink:
			err = os.Symlink(e.Link, p)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The interpreter must resolve, inside the root, through the links.
	ld, err := filepath.EvalSymlinks(filepath.Join(root, interp))
	if err != nil {
		t.Fatalf("the interpreter %s does not resolve in the image: %v", interp, err)
	}
	if !strings.HasPrefix(ld, root) {
		t.Fatalf("the interpreter %s resolves outside the image: %s", interp, ld)
	}
	out, err := exec.Command(ld, "--inhibit-cache", "--library-path", libDir, bin).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "dlopen libm.so.6: true" {
		t.Fatalf("running with the image's C runtime: %v\n%s", err, out)
	}
}
