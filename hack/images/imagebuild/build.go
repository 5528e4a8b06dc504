package imagebuild

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mlplane/mlplane/internal/manifests"
)

// Options say how to build. Zero fields take the defaults in their
// comments, applied by Build.
type Options struct {
	// Dir is the module root (default: the directory above the working
	// directory that holds go.mod).
	Dir string
	// Repo names the images: Repo/<Image.Name>:Tag (default DefaultRepo).
	Repo string
	// Tag is the images' tag and version label (default DefaultTag).
	Tag string
	// Platforms to build (default linux/amd64 and linux/arm64). A cgo image
	// gets the platforms that have a C compiler here.
	Platforms []v1.Platform
	// Revision is the org.opencontainers.image.revision label (default
	// `git rev-parse HEAD` in Dir, "unknown" outside git).
	Revision string
	// Created is every timestamp in the images (default SOURCE_DATE_EPOCH,
	// else the Unix epoch), so that a rebuild has the same digests.
	Created time.Time
	// Go is the go command (default "go").
	Go string
	// CACertFile is the CA bundle put into images with CACerts (default
	// /etc/ssl/certs/ca-certificates.crt).
	CACertFile string
	// WorkDir holds the binaries (default a temporary directory, removed).
	WorkDir string
	// Logf reports progress (default silent).
	Logf func(format string, args ...any)
}

// Built is one image: its index and names.
type Built struct {
	Image Image
	// Refs are its full names: Repo/Name:Tag, then Image.ExtraRefs.
	Refs  []string
	Index v1.ImageIndex
	// Skipped says which requested platforms were left out, and why.
	Skipped []string
}

// DefaultPlatforms are the platforms built when Options.Platforms is empty.
var DefaultPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}

// ParsePlatform reads "linux/amd64" or "linux/arm64[/v8]".
func ParsePlatform(s string) (v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil {
		return v1.Platform{}, err
	}
	if p.OS != "linux" {
		return v1.Platform{}, fmt.Errorf("platform %q: only linux images are built", s)
	}
	if p.Architecture == "arm64" && p.Variant == "" {
		p.Variant = "v8"
	}
	return *p, nil
}

func (o *Options) defaults(ctx context.Context) error {
	if o.Dir == "" {
		d, err := moduleRoot()
		if err != nil {
			return err
		}
		o.Dir = d
	}
	if o.Repo == "" {
		o.Repo = DefaultRepo
	}
	if o.Tag == "" {
		o.Tag = DefaultTag
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Revision == "" {
		out, err := exec.CommandContext(ctx, "git", "-C", o.Dir, "rev-parse", "HEAD").Output()
		o.Revision = strings.TrimSpace(string(out))
		if err != nil || o.Revision == "" {
			o.Revision = "unknown"
		}
	}
	if o.Created.IsZero() {
		o.Created = time.Unix(0, 0).UTC()
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			var sec int64
			if _, err := fmt.Sscan(s, &sec); err != nil {
				return fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
			}
			o.Created = time.Unix(sec, 0).UTC()
		}
	}
	if o.CACertFile == "" {
		o.CACertFile = "/etc/ssl/certs/ca-certificates.crt"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// moduleRoot is the directory above the working directory holding go.mod
// (the one config/ is found in).
func moduleRoot() (string, error) {
	c, err := manifests.ConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Dir(c), nil
}

// Build builds images for o.Platforms: per platform one `go build` of the
// static binaries and one of the cgo ones, then one image per binary and
// platform, and one index per image.
func Build(ctx context.Context, images []Image, o Options) ([]Built, error) {
	if err := o.defaults(ctx); err != nil {
		return nil, err
	}
	work := o.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "mlplane-images-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		work = d
	}
	var caCerts []byte
	for _, im := range images {
		if im.CACerts {
			b, err := os.ReadFile(o.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("%s needs the CA bundle: %w", im.Name, err)
			}
			caCerts = b
			break
		}
	}

	built := make([]Built, len(images))
	adds := make([][]mutate.IndexAddendum, len(images))
	for i, im := range images {
		built[i] = Built{Image: im, Refs: append([]string{o.Repo + "/" + im.Name + ":" + o.Tag}, im.ExtraRefs...)}
	}
	for _, plat := range o.Platforms {
		binDir := filepath.Join(work, plat.OS+"_"+plat.Architecture)
		if err := os.RemoveAll(binDir); err != nil {
			return nil, err
		}
		var static, cgo []string
		var cc string
		for i, im := range images {
			if !im.Cgo {
				static = append(static, im.Package)
				continue
			}
			if cc == "" {
				cc = cCompiler(ctx, o.Go, plat.Architecture, runtime.GOARCH)
			}
			if cc == "" {
				why := fmt.Sprintf("%s left out: it needs cgo, and there is no C compiler for %s here (install %s)", plat, plat, cross[plat.Architecture])
				built[i].Skipped = append(built[i].Skipped, why)
				o.Logf("images: %s: %s", im.Name, why)
				continue
			}
			cgo = append(cgo, im.Package)
		}
		if err := goBuild(ctx, o, plat, "", static, binDir); err != nil {
			return nil, err
		}
		if err := goBuild(ctx, o, plat, cc, cgo, binDir); err != nil {
			return nil, err
		}
		for i, im := range images {
			bin := filepath.Join(binDir, im.Binary())
			if _, err := os.Stat(bin); err != nil {
				continue // skipped above
			}
			img, err := image(ctx, o, im, plat, bin, cc, caCerts)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", im.Name, plat, err)
			}
			p := plat
			adds[i] = append(adds[i], mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
		}
	}
	for i := range built {
		if len(adds[i]) == 0 {
			return nil, fmt.Errorf("%s: no platform could be built: %s", built[i].Image.Name, strings.Join(built[i].Skipped, "; "))
		}
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		built[i].Index = mutate.AppendManifests(idx, adds[i]...)
	}
	return built, nil
}

// goBuild builds pkgs for plat into dir: static (CGO_ENABLED=0) when cc is
// empty, else with cgo and the pure-Go resolver and user lookup (the C
// library serves only what the binary dlopens).
func goBuild(ctx context.Context, o Options, plat v1.Platform, cc string, pkgs []string, dir string) error {
	if len(pkgs) == 0 {
		return nil
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", dir + string(filepath.Separator)}
	env := append(os.Environ(), "GOOS="+plat.OS, "GOARCH="+plat.Architecture, "CGO_ENABLED=0")
	if cc != "" {
		args = append(args, "-tags=netgo,osusergo")
		env = append(env, "CGO_ENABLED=1", "CC="+cc)
		if os.Getenv("CGO_CFLAGS") == "" {
			// go-nvml's header marks many NVML calls deprecated.
			env = append(env, "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
		}
	}
	args = append(args, pkgs...)
	o.Logf("images: %s, CGO_ENABLED=%d: go %s", plat, map[bool]int{false: 0, true: 1}[cc != ""], strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, o.Go, args...)
	cmd.Dir = o.Dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", plat, err, out)
	}
	for _, p := range pkgs {
		bin := filepath.Join(dir, filepath.Base(p))
		interp, err := elfInterpreter(bin)
		if err != nil {
			return err
		}
		if cc == "" && interp != "" {
			return fmt.Errorf("%s: built with CGO_ENABLED=0 but asks for %s", bin, interp)
		}
	}
	return nil
}

func elfInterpreter(bin string) (string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return interpreter(f)
}

// image assembles one platform's image: the base files, the C runtime for
// a cgo binary, the binary; config with the entrypoint, the user and the
// labels.
func image(ctx context.Context, o Options, im Image, plat v1.Platform, bin, cc string, caCerts []byte) (v1.Image, error) {
	history := func(by string) v1.History {
		return v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "hack/images: " + by}
	}
	base := baseEntries()
	if im.CACerts {
		base = append(base, file("/etc/ssl/certs/ca-certificates.crt", 0o644, caCerts))
	}
	baseLayer, err := newLayer(base, o.Created)
	if err != nil {
		return nil, err
	}
	adds := []mutate.Addendum{{Layer: baseLayer, History: history("base files (passwd, group, nsswitch.conf, /tmp, CA certificates where needed)")}}
	if im.Cgo {
		clib, names, err := cRuntime(ctx, cc, bin, im.Dlopen)
		if err != nil {
			return nil, err
		}
		l, err := newLayer(clib, o.Created)
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		adds = append(adds, mutate.Addendum{Layer: l, History: history("C runtime from " + filepath.Base(cc) + ": " + strings.Join(names, " "))})
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	binLayer, err := newLayer([]entry{file(im.Path, 0o755, data)}, o.Created)
	if err != nil {
		return nil, err
	}
	adds = append(adds, mutate.Addendum{Layer: binLayer, History: history("go build " + im.Package)})

	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: o.Created}
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Config = v1.Config{
		Entrypoint: []string{im.Path},
		User:       User,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.source":      Source,
			"org.opencontainers.image.revision":    o.Revision,
			"org.opencontainers.image.version":     o.Tag,
			"org.opencontainers.image.title":       im.Name,
			"org.opencontainers.image.description": im.Description,
		},
	}
	return mutate.ConfigFile(img, cf)
}

// baseEntries are the files every image has: a root and a nonroot user
// (65532, distroless's) and group, the nonroot user's home, /tmp, and an
// nsswitch.conf for the C library of cgo images.
func baseEntries() []entry {
	home := dir("/home/nonroot", 0o700)
	home.UID, home.GID = 65532, 65532
	return []entry{
		file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")),
		file("/etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")),
		file("/etc/nsswitch.conf", 0o644, []byte("passwd: files\ngroup: files\nhosts: files dns\n")),
		dir("/root", 0o700),
		home,
		dir("/tmp", 0o1777),
	}
}
