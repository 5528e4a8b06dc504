// Command model-loader is the init container the webhook injects: it
// fetches the model at --uri into --dest and exits 0 only when every file
// is in place and verified (docs/model-loader.md).
//
//	model-loader --uri=URI --dest=DIR [--allow-patterns=P,...] [--cache-dir=DIR] ...
//
// Every flag also has an environment variable (the flag wins); credentials
// come only from each ecosystem's standard environment (AWS_*, GOOGLE_*,
// HF_TOKEN, AZURE_*, OCI_USERNAME/OCI_PASSWORD). On failure it prints one
// line naming the URI (credentials redacted) and the cause, writes it to
// the termination log so that the pod's init container status shows it,
// and exits with the code of the failure's kind: 2 bad input, 3 access
// denied, 4 not found, 5 network or TLS, 6 disk, 7 integrity, 1 anything
// else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/archive"

	// The sources, one per scheme; each registers itself.
	_ "github.com/mlplane/mlplane/internal/modelload/azblob"
	_ "github.com/mlplane/mlplane/internal/modelload/gcs"
	_ "github.com/mlplane/mlplane/internal/modelload/hf"
	_ "github.com/mlplane/mlplane/internal/modelload/httpsrc"
	_ "github.com/mlplane/mlplane/internal/modelload/oci"
	_ "github.com/mlplane/mlplane/internal/modelload/s3"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	klog.Flush()
	os.Exit(code)
}

// options are the flags.
type options struct {
	uri, dest        string
	allow, ignore    string
	cacheDir         string
	cacheMax         string
	volumeSize       string
	caBundle         string
	terminationLog   string
	concurrency      int
	chunkSize        string
	retries          int
	stallTimeout     time.Duration
	progressInterval time.Duration
	s3PathStyle      bool
	ociPlainHTTP     bool
}

// run returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	args, cpuprofile := cutCPUProfile(args)
	if cpuprofile != "" {
		if f, err := os.Create(cpuprofile); err != nil {
			fmt.Fprintf(stderr, "model-loader: --cpuprofile: %v\n", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			fmt.Fprintf(stderr, "model-loader: --cpuprofile: %v\n", err)
		} else {
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
	}
	fs := flag.NewFlagSet("model-loader", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.uri, "uri", getenv(api.EnvModelURI), "model URI (default $"+api.EnvModelURI+"): "+modelload.Schemes)
	fs.StringVar(&o.dest, "dest", getenv(api.EnvModelDir), "directory to load the model into (default $"+api.EnvModelDir+")")
	fs.StringVar(&o.allow, "allow-patterns", getenv(api.EnvLoaderAllowPatterns), "comma-separated file patterns to load, huggingface_hub's rules (default $"+api.EnvLoaderAllowPatterns+"; empty: all)")
	fs.StringVar(&o.ignore, "ignore-patterns", getenv(api.EnvLoaderIgnorePatterns), "comma-separated file patterns to skip (default $"+api.EnvLoaderIgnorePatterns+")")
	fs.StringVar(&o.cacheDir, "cache-dir", getenv(api.EnvLoaderCacheDir), "node cache directory (default $"+api.EnvLoaderCacheDir+"; empty: no cache)")
	fs.StringVar(&o.cacheMax, "cache-max-size", getenv(api.EnvLoaderCacheMaxSize), "node cache size bound, a quantity such as 500Gi (default $"+api.EnvLoaderCacheMaxSize+"; empty: unbounded)")
	fs.StringVar(&o.volumeSize, "volume-size", getenv(api.EnvLoaderVolumeSize), "the destination volume's size limit, a quantity (default $"+api.EnvLoaderVolumeSize+"); a model that cannot fit fails before downloading")
	fs.StringVar(&o.caBundle, "ca-bundle", "", "PEM file of extra CA certificates (SSL_CERT_FILE and SSL_CERT_DIR replace the system roots)")
	fs.StringVar(&o.terminationLog, "termination-log", "/dev/termination-log", "file the failure line is also written to (the container's terminationMessagePath; empty: none)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "range requests at once, over all files")
	fs.StringVar(&o.chunkSize, "chunk-size", "64Mi", "bytes per range request; larger files are fetched as parallel ranges")
	fs.IntVar(&o.retries, "retries", 10, "retries of one range request after a retryable failure")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", time.Minute, "abort and retry a request that moves no byte for this long")
	fs.DurationVar(&o.progressInterval, "progress-interval", 10*time.Second, "how often progress is logged (0: never)")
	fs.BoolVar(&o.s3PathStyle, "s3-path-style", false, "path-style S3 addressing (automatic for IP-literal and localhost endpoints, and with AWS_S3_USE_PATH_STYLE=true)")
	fs.BoolVar(&o.ociPlainHTTP, "oci-plain-http", false, "plain HTTP to the OCI registry (automatic for localhost and loopback registries)")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlags.Lookup("v").Value, "v", "log verbosity (1: every retry)")
	klog.SetOutput(stderr)
	klogFlags.Set("logtostderr", "false")
	klogFlags.Set("alsologtostderr", "false")
	klogFlags.Set("stderrthreshold", "FATAL")

	fail := func(err error) int {
		e := modelload.Classify(err)
		line := fmt.Sprintf("model-loader: %s: %v", e.Kind, e)
		fmt.Fprintln(stderr, line)
		if o.terminationLog != "" {
			// Best effort: outside a pod the file does not exist.
			if f, err := os.OpenFile(o.terminationLog, os.O_WRONLY|os.O_TRUNC, 0); err == nil {
				fmt.Fprintln(f, line)
				f.Close()
			}
		}
		return e.Kind.ExitCode()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return modelload.KindUsage.ExitCode()
	}
	if fs.NArg() > 0 {
		return fail(modelload.Errorf(modelload.KindUsage, "unexpected arguments %q", fs.Args()))
	}
	lo := modelload.Options{
		URI: o.uri, Dest: o.dest, Allow: splitList(o.allow), Ignore: splitList(o.ignore),
		Concurrency: o.concurrency, Retries: o.retries, StallTimeout: o.stallTimeout,
		ProgressInterval: o.progressInterval, Unpack: archive.Unpack, Log: klog.NewKlogr(),
	}
	if o.progressInterval == 0 {
		lo.ProgressInterval = -1
	}
	var err error
	if lo.ChunkSize, err = quantity("--chunk-size", o.chunkSize); err != nil {
		return fail(err)
	}
	if lo.VolumeSize, err = quantity("--volume-size", o.volumeSize); err != nil {
		return fail(err)
	}
	so := modelload.SourceOptions{Getenv: getenv, S3PathStyle: o.s3PathStyle, OCIPlainHTTP: o.ociPlainHTTP}
	if o.caBundle != "" {
		pool, err := modelload.LoadCAs(o.caBundle)
		if err != nil {
			return fail(err)
		}
		so.HTTPClient = modelload.NewHTTPClient(pool)
	}
	var cache *modelload.Cache
	if o.cacheDir != "" {
		max, err := quantity("--cache-max-size", o.cacheMax)
		if err != nil {
			return fail(err)
		}
		cache = &modelload.Cache{Dir: o.cacheDir, MaxBytes: max}
	}
	if _, err := modelload.Load(ctx, lo, so, cache); err != nil {
		return fail(err)
	}
	return 0
}

// cutCPUProfile removes the hidden --cpuprofile=FILE flag (for
// hack/bench-loader; not in the usage) from args and returns its value.
func cutCPUProfile(args []string) ([]string, string) {
	var out []string
	file := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "cpuprofile" {
			out = append(out, a)
			continue
		}
		if !hasVal && i+1 < len(args) {
			i++
			val = args[i]
		}
		file = val
	}
	return out, file
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// quantity parses a Kubernetes quantity flag into bytes; "" is 0.
func quantity(flagName, v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() < 0 {
		return 0, modelload.Errorf(modelload.KindUsage, "%s=%q: want a non-negative quantity such as 64Mi or 500Gi", flagName, v)
	}
	return q.Value(), nil
}
