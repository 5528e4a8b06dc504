// Command model-server is mlplane's example serving container: instead of
// running a model it proves what the pod got. At start it reads the model
// loader's manifest (MODEL_MANIFEST, api.ModelManifestFile in MODEL_DIR),
// checks every listed file in MODEL_DIR (present, its size, its sha256) and
// then answers GET / with a JSON document: the model's URI, revision,
// files, a digest over the files as read from disk, the
// NVIDIA_VISIBLE_DEVICES and MLPLANE_GPU_MEMORY_MIB it was given, and its
// pod's name and namespace (POD_NAME, POD_NAMESPACE, from the downward
// API). The output is byte-for-byte deterministic, so an end-to-end test
// can compare it with what it expects. /healthz answers while the process
// runs, /readyz once the model is read.
//
//	model-server [--addr :8080] [--model-dir $MODEL_DIR] [--manifest $MODEL_MANIFEST]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mlplane/mlplane/internal/api"
)

// Env names the pod's name and namespace come in (from the downward API;
// see the example Deployment in docs/install.md).
const (
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "model-server:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	fs := flag.NewFlagSet("model-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "address to serve on")
	dir := fs.String("model-dir", getenv(api.EnvModelDir), "the model's directory (default $"+api.EnvModelDir+")")
	manifest := fs.String("manifest", getenv(api.EnvModelManifest), "the loader's manifest (default $"+api.EnvModelManifest+", else "+api.ModelManifestFile+" in the model directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dir == "" {
		return fmt.Errorf("no model directory: set --model-dir or %s", api.EnvModelDir)
	}
	if *manifest == "" {
		*manifest = filepath.Join(*dir, api.ModelManifestFile)
	}

	s := NewServer(EnvFrom(lookupEnv))
	srv := &http.Server{Addr: *addr, Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.ListenAndServe() }()
	go func() {
		start := time.Now()
		m, err := LoadModel(*dir, *manifest)
		if err != nil {
			errc <- err
			return
		}
		s.SetModel(m)
		fmt.Fprintf(stderr, "model-server: serving %s (%d files, %d bytes, %s) on %s, read in %s\n",
			m.URI, len(m.Files), m.Bytes, m.Digest, *addr, time.Since(start).Round(time.Millisecond))
	}()
	select {
	case err := <-errc:
		_ = srv.Close()
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shut)
}
