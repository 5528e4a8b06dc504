// Command images builds mlplane's container images without Docker or any
// container engine (package imagebuild), and serves them from a registry
// on loopback for a local containerd.
//
//	images [--only webhook,pause] [--platforms linux/amd64,linux/arm64] [--tag v0.1.0]
//	       [--out _output/images] [--archive linux/amd64] [--push 127.0.0.1:5000/mlplane]
//	images registry [--addr 127.0.0.1:5000] [--dir _output/registry] [--load _output/images]
//
// The first form writes an OCI layout of every image to --out, a
// docker-archive tarball of one platform beside it (for `ctr -n k8s.io
// images import`), and pushes to --push when given. The second serves
// go-containerregistry's registry on a loopback address until interrupted,
// first loading the layout's images into it (see docs/install.md, Images).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/mlplane/mlplane/hack/images/imagebuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "registry" {
		err = serve(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		err = build(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "images:", err)
		}
		os.Exit(1)
	}
}

func build(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		only, platforms, archive, push string
		o                              imagebuild.Options
	)
	fs.StringVar(&only, "only", "", "comma-separated images to build (default all: "+names()+")")
	fs.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated platforms; cgo images (node-agent) get those with a C compiler here")
	fs.StringVar(&o.Repo, "repo", imagebuild.DefaultRepo, "repository the images are named under in the layout and the archive (REPO/<image>:TAG)")
	fs.StringVar(&o.Tag, "tag", imagebuild.DefaultTag, "tag and version label")
	out := fs.String("out", "_output/images", "OCI layout directory (replaced)")
	fs.StringVar(&archive, "archive", "linux/"+runtime.GOARCH, "also write OUT/images-<os>-<arch>.tar, a docker-archive of this platform (empty: none)")
	fs.StringVar(&push, "push", "", "push every image to PUSH/<image>:TAG (plain HTTP for a loopback registry; else credentials from the Docker config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var sel []string
	if only != "" {
		sel = strings.Split(only, ",")
	}
	images, err := imagebuild.Select(sel)
	if err != nil {
		return err
	}
	for _, s := range strings.Split(platforms, ",") {
		p, err := imagebuild.ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		o.Platforms = append(o.Platforms, p)
	}
	o.Logf = func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }

	start := time.Now()
	built, err := imagebuild.Build(ctx, images, o)
	if err != nil {
		return err
	}
	if err := imagebuild.WriteLayout(*out, built); err != nil {
		return err
	}
	for _, b := range built {
		if err := report(stdout, b); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "images: OCI layout %s (%s)\n", *out, time.Since(start).Round(time.Second))
	if archive != "" {
		p, err := imagebuild.ParsePlatform(archive)
		if err != nil {
			return err
		}
		file := filepath.Join(*out, "images-"+p.OS+"-"+p.Architecture+".tar")
		missing, err := imagebuild.WriteArchive(file, built, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "images: %s for `ctr -n k8s.io images import %s`", file, file)
		if len(missing) > 0 {
			fmt.Fprintf(stdout, " (without %s: not built for %s)", strings.Join(missing, ", "), p)
		}
		fmt.Fprintln(stdout)
	}
	if push != "" {
		refs, err := imagebuild.PushAll(ctx, built, push, o.Tag)
		for _, r := range refs {
			fmt.Fprintf(stdout, "images: pushed %s\n", r)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// report prints one line per platform: name, platform, digest, size.
func report(w io.Writer, b imagebuild.Built) error {
	d, err := b.Index.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s@%s\n", strings.Join(b.Refs, ", "), d)
	m, err := b.Index.IndexManifest()
	if err != nil {
		return err
	}
	for _, desc := range m.Manifests {
		img, err := b.Index.Image(desc.Digest)
		if err != nil {
			return err
		}
		n, err := imagebuild.Size(img)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  %-13s %s  %6.1f MB compressed\n", platformString(desc.Platform), desc.Digest, float64(n)/1e6)
	}
	for _, s := range b.Skipped {
		fmt.Fprintf(w, "  %s\n", s)
	}
	return nil
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return "?"
	}
	return p.OS + "/" + p.Architecture
}

func names() string {
	var n []string
	for _, im := range imagebuild.Images {
		n = append(n, im.Name)
	}
	return strings.Join(n, ",")
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images registry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:5000", "loopback address to serve on")
	dir := fs.String("dir", "", "directory for the blobs (default: memory)")
	load := fs.String("load", "", "OCI layout whose images to push into the registry at start (e.g. _output/images)")
	verbose := fs.Bool("v", false, "log every request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var logger *log.Logger
	if *verbose {
		logger = log.New(stderr, "registry: ", log.LstdFlags)
	}
	r, err := imagebuild.StartRegistry(*addr, *dir, logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registry: serving http://%s\n", r.Addr)
	if *load != "" {
		refs, err := imagebuild.LoadLayout(ctx, *load, r.Addr)
		for _, ref := range refs {
			fmt.Fprintf(stdout, "registry: loaded %s\n", ref)
		}
		if err != nil {
			_ = r.Close(context.Background())
			return err
		}
	}
	<-ctx.Done()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.Close(shut)
}
