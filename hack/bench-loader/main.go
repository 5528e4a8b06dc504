// Command bench-loader measures mlplane's model loader (cmd/model-loader)
// beside the download tools a cluster would otherwise use, on loopback,
// with the same model in one run (BENCHMARKS.md, "Model loader"):
//
//	bench-loader [--size 2Gi] [--shards 4] [--rounds 3] [--tools loader-s3,rclone,...]
//	             [--dir DIR] [--dest-dir DIR] [--out _output/bench] [--tls] [--hub-h2]
//	             [--profile-dir DIR] [--loader bin/model-loader] [--loader-arg ARG ...]
//	             [--s3-crc64nvme]
//
// It writes a deterministic model (--shards weight shards of --size bytes in
// all, plus a Hugging Face repository's small files), serves it from disk
// by an S3 server (gofakes3, a read-only disk backend that sends by
// sendfile; --s3-crc64nvme adds the full-object CRC64NVME checksum S3 gives
// objects uploaded since 2025) and by the fake Hugging Face hub with its CDN
// (internal/modelload/hf/fakehub), each on 127.0.0.1 behind a
// byte-counting middleware, and then, --rounds times, the order of the
// clients reversed every other round, runs each client as a subprocess
// into a fresh directory: model-loader on s3:// and hf://, `rclone copy`
// with its defaults and tuned, `aws s3 cp --recursive` with its defaults
// and tuned, and `aria2c -x16 -s16 -j16` over the hub's resolve URLs. Each
// run records wall time, MB/s (10^6 bytes of model per second), the
// child's CPU seconds (rusage user+sys, its waited-for children included)
// and peak RSS (rusage maxrss), the bytes and requests the server answered
// and the server's CPU; each destination is then checked file by file
// (sha256 against the source) and removed; a wrong or missing byte fails
// the run (exit 1). Before the rounds, an in-process reader that discards
// what it reads measures what the servers can send (the ceiling); after
// them, the node cache: two loads of the same model with --cache-dir into
// two destinations, of which the second must be served no file byte.
//
// The clients' environment is built from nothing: a fake HOME with empty
// configurations, no proxy, static credentials, AWS_EC2_METADATA_DISABLED,
// endpoints on 127.0.0.1 only. hack/bench-loader.sh also runs it in a
// network namespace of its own, where only loopback exists.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mlplane/mlplane/internal/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

type options struct {
	size                    int64
	shards, rounds          int
	dir, destDir, out       string
	tools                   []string
	loader, rclone, aws, a2 string
	loaderArgs              []string
	tls, hubH2, s3CRC       bool
	cache, ceiling, keep    bool
	profileDir, logDir      string
	timeout                 time.Duration
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := flag.NewFlagSet("bench-loader", flag.ContinueOnError)
	size := fs.String("size", "2Gi", "bytes of weight shards in all (a quantity); the small files add about 2.1 MiB")
	fs.IntVar(&o.shards, "shards", 4, "weight shards")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of all clients (medians reported); the order reverses every other round")
	fs.StringVar(&o.dir, "dir", "", "work directory: the model (reused by later runs with the same size and shards), logs, destinations (default: a temporary directory, removed)")
	fs.StringVar(&o.destDir, "dest-dir", "", "where the clients' destination directories go (default DIR/dest); a tmpfs such as /dev/shm takes the disk out of the figures")
	fs.StringVar(&o.out, "out", "_output/bench", "directory for the report (loader.txt, loader.json)")
	toolNames := fs.String("tools", "", "clients to run, comma-separated (default all: loader-s3,loader-hf,rclone,rclone-tuned,aws,aws-tuned,aria2c)")
	fs.StringVar(&o.loader, "loader", "bin/model-loader", "the model-loader binary")
	fs.StringVar(&o.rclone, "rclone", "/usr/bin/rclone", "rclone (Debian's)")
	fs.StringVar(&o.aws, "aws", "/usr/bin/aws", "the AWS CLI (Debian's awscli)")
	fs.StringVar(&o.a2, "aria2c", "/usr/bin/aria2c", "aria2c (Debian's aria2)")
	fs.Func("loader-arg", "an argument added to every model-loader command line (repeatable), e.g. --loader-arg=--concurrency=32", func(s string) error {
		o.loaderArgs = append(o.loaderArgs, s)
		return nil
	})
	fs.BoolVar(&o.tls, "tls", false, "serve S3, the hub and its CDN over TLS (a CA made for the run, given to every client)")
	fs.BoolVar(&o.hubH2, "hub-h2", false, "with --tls, the hub and CDN also offer HTTP/2 (as huggingface.co does); S3 stays HTTP/1.1")
	fs.BoolVar(&o.s3CRC, "s3-crc64nvme", false, "S3 objects also carry a full-object CRC64NVME checksum, as S3 gives every object uploaded since 2025 (default: only the single-part upload's MD5 ETag)")
	fs.BoolVar(&o.cache, "cache", true, "measure the node cache (two loads with --cache-dir per path)")
	fs.BoolVar(&o.ceiling, "ceiling", true, "measure what the servers can send to an in-process reader first")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (default: kept when --dir is given)")
	fs.StringVar(&o.profileDir, "profile-dir", "", "after the rounds, load once more per path with model-loader's --cpuprofile into DIR/loader-{s3,hub}.pprof (not in the medians)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "limit of one client run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	q, err := resource.ParseQuantity(*size)
	if err != nil || q.Value() < int64(o.shards) || o.shards < 1 || o.rounds < 1 {
		return fmt.Errorf("--size %q, --shards %d, --rounds %d: want a positive size of at least one byte per shard", *size, o.shards, o.rounds)
	}
	o.size = q.Value()
	tools := allTools()
	if *toolNames != "" {
		byName := map[string]*tool{}
		for _, t := range tools {
			byName[t.Name] = t
		}
		tools = nil
		for _, n := range strings.Split(*toolNames, ",") {
			t := byName[strings.TrimSpace(n)]
			if t == nil {
				return fmt.Errorf("--tools: unknown client %q", n)
			}
			tools = append(tools, t)
		}
	}
	need := map[string]string{}
	for _, t := range tools {
		switch {
		case t.Ours:
			need[o.loader] = "go build -o bin/ ./cmd/model-loader"
		case strings.HasPrefix(t.Name, "rclone"):
			need[o.rclone] = "apt-get install -y rclone"
		case strings.HasPrefix(t.Name, "aws"):
			need[o.aws] = "apt-get install -y awscli"
		case t.Name == "aria2c":
			need[o.a2] = "apt-get install -y aria2"
		}
	}
	if o.cache || o.profileDir != "" {
		need[o.loader] = "go build -o bin/ ./cmd/model-loader"
	}
	for bin, how := range need {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s: %v (%s)", bin, err, how)
		}
	}
	if o.loader, err = filepath.Abs(o.loader); err != nil {
		return err
	}

	var failed []string
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "bench-loader-"); err != nil {
			return err
		}
		if !o.keep {
			// Kept when a run failed, for its logs.
			defer func() {
				if len(failed) == 0 {
					os.RemoveAll(o.dir)
				} else {
					logf("the logs are in %s", o.logDir)
				}
			}()
		}
	}
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	if o.destDir == "" {
		o.destDir = filepath.Join(o.dir, "dest")
	}
	o.logDir = filepath.Join(o.dir, "logs", time.Now().UTC().Format("20060102-150405"))
	for _, d := range []string{o.dir, o.destDir, o.out, o.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	rep := &report{
		Started: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), CPUs: runtime.NumCPU(),
		LoadAvg: loadAvg(), Interfaces: interfaces(), Size: o.size, Shards: o.shards, Rounds: o.rounds,
		TLS: o.tls, HubH2: o.hubH2, S3CRC64NVME: o.s3CRC, DestFS: fsType(o.destDir), LoaderArgs: o.loaderArgs,
		Versions: versions(o, tools),
	}
	spec := modelSpec{Version: 1, Size: o.size, Shards: o.shards, Seed: 1}
	modelDir := filepath.Join(o.dir, fmt.Sprintf("model-%d-%d", o.size, o.shards))
	files, err := writeModel(modelDir, spec, logf)
	if err != nil {
		return err
	}
	rep.Files, rep.ModelBytes = len(files), total(files)
	logf("starting the servers (the hub hashes the model)")
	srv, err := startServers(modelDir, files, tlsDir(o), o.hubH2, o.s3CRC)
	if err != nil {
		return err
	}
	defer srv.close()
	logf("S3 %s, hub %s, CDN %s", srv.s3URL, srv.hubURL, srv.cdnURL)
	e := &env{s: srv, home: filepath.Join(o.dir, "home"), tmp: filepath.Join(o.dir, "tmp"),
		loader: o.loader, rclone: o.rclone, aws: o.aws, aria2c: o.a2, loaderArgs: o.loaderArgs}
	if err := e.setup(files); err != nil {
		return err
	}
	r := &runner{o: o, e: e, files: files, rep: rep}

	if o.ceiling {
		for _, p := range []string{pathS3, pathHub} {
			if err := r.ceiling(ctx, p); err != nil {
				return err
			}
		}
	}
	for round := range o.rounds {
		order := append([]*tool(nil), tools...)
		if round%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, t := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res := r.load(ctx, t, phaseRound, round+1, "", nil)
			if res.Err != "" {
				failed = append(failed, fmt.Sprintf("%s round %d: %s", t.Name, round+1, res.Err))
			}
		}
	}
	if o.cache {
		for _, t := range allTools()[:2] {
			cacheDir := filepath.Join(o.destDir, "cache-"+t.Path)
			os.RemoveAll(cacheDir)
			for _, ph := range []string{phaseCacheCold, phaseCacheWarm} {
				res := r.load(ctx, t, ph, 1, "", []string{"--cache-dir=" + cacheDir})
				if res.Err != "" {
					failed = append(failed, fmt.Sprintf("%s %s: %s", t.Name, ph, res.Err))
				} else if ph == phaseCacheWarm && res.Served.Content != 0 {
					failed = append(failed, fmt.Sprintf("%s %s: the server sent %d file bytes; want 0", t.Name, ph, res.Served.Content))
				}
			}
			os.RemoveAll(cacheDir)
		}
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
		for _, t := range allTools()[:2] {
			prof, _ := filepath.Abs(filepath.Join(o.profileDir, "loader-"+t.Path+".pprof"))
			res := r.load(ctx, t, phaseProfile, 1, prof, nil)
			if res.Err != "" {
				failed = append(failed, fmt.Sprintf("%s %s: %s", t.Name, phaseProfile, res.Err))
			} else {
				logf("CPU profile: go tool pprof -top %s %s", o.loader, prof)
			}
		}
	}
	rep.Failed = failed
	rep.summarize(tools)
	if err := rep.emit(o.out); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d runs failed:\n  %s", len(failed), strings.Join(failed, "\n  "))
	}
	return nil
}

func tlsDir(o options) string {
	if !o.tls {
		return ""
	}
	return filepath.Join(o.dir, "tls")
}

// Phases of a run.
const (
	phaseCeiling   = "ceiling"
	phaseRound     = "round"
	phaseCacheCold = "cache-1st"
	phaseCacheWarm = "cache-2nd"
	phaseProfile   = "profile"
)

// result is one run.
type result struct {
	Tool      string  `json:"tool"`
	Path      string  `json:"path"`
	Phase     string  `json:"phase"`
	Round     int     `json:"round"`
	WallS     float64 `json:"wallSeconds"`
	MBps      float64 `json:"MBps"`
	UserS     float64 `json:"userSeconds"`
	SysS      float64 `json:"sysSeconds"`
	CPUS      float64 `json:"cpuSeconds"`
	MaxRSSMiB float64 `json:"maxRSSMiB"`
	// Served is what the server sent during the run.
	Served served `json:"served"`
	// ServerCPUS is this process's CPU during the run: the servers (and,
	// in the ceiling phase, the in-process reader).
	ServerCPUS float64 `json:"serverCPUSeconds"`
	Err        string  `json:"error,omitempty"`
}

type runner struct {
	o     options
	e     *env
	files []modelFile
	rep   *report
	seq   int
}

func (r *runner) counter(path string) *counter {
	if path == pathS3 {
		return &r.e.s.s3
	}
	return &r.e.s.hub
}

// load runs t once into a fresh destination, checks it and removes it.
func (r *runner) load(ctx context.Context, t *tool, phase string, round int, cpuprofile string, extra []string) *result {
	r.seq++
	res := &result{Tool: t.Name, Path: t.Path, Phase: phase, Round: round}
	defer func() { r.rep.Runs = append(r.rep.Runs, res) }()
	dest := filepath.Join(r.o.destDir, fmt.Sprintf("%03d-%s-%s", r.seq, t.Name, phase))
	if err := os.RemoveAll(dest); err != nil {
		res.Err = err.Error()
		return res
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		res.Err = err.Error()
		return res
	}
	defer os.RemoveAll(dest)
	argv, envv := t.argv(r.e, dest)
	argv = append(argv, extra...)
	if cpuprofile != "" {
		argv = append(argv, "--cpuprofile="+cpuprofile)
	}
	logName := filepath.Join(r.o.logDir, fmt.Sprintf("%03d-%s-%s-%d.log", r.seq, t.Name, phase, round))
	lf, err := os.Create(logName)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer lf.Close()
	fmt.Fprintf(lf, "$ %s\n", strings.Join(argv, " "))
	cctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	cmd.Env = append(r.e.baseEnv(), envv...)
	cmd.Dir = r.e.tmp
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }

	// Let the previous run's writeback finish before this one starts.
	syscall.Sync()
	c := r.counter(t.Path)
	before, cpu0 := c.snapshot(), selfCPU()
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	res.ServerCPUS = selfCPU() - cpu0
	res.Served = c.snapshot().sub(before)
	res.WallS = wall.Seconds()
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			res.UserS = tvSeconds(ru.Utime)
			res.SysS = tvSeconds(ru.Stime)
			res.CPUS = res.UserS + res.SysS
			res.MaxRSSMiB = float64(ru.Maxrss) / 1024 // KiB on Linux
		}
	}
	if err != nil {
		res.Err = fmt.Sprintf("%v (log: %s)", err, logName)
		logf("%-13s %-9s round %d: FAILED: %s", t.Name, phase, round, res.Err)
		return res
	}
	res.MBps = float64(total(r.files)) / 1e6 / res.WallS
	allowed := map[string]bool{}
	if t.Ours {
		allowed[api.ModelManifestFile] = true
	}
	if err := verifyDir(dest, r.files, allowed, runtime.NumCPU()); err != nil {
		res.Err = fmt.Sprintf("wrong result: %v (log: %s)", err, logName)
		logf("%-13s %-9s round %d: FAILED: %s", t.Name, phase, round, res.Err)
		return res
	}
	logf("%-13s %-9s round %d: %6.1f MB/s, %.2f s, CPU %.2f s (user %.2f, sys %.2f), RSS %.1f MiB, served %s in %d requests, server CPU %.2f s",
		t.Name, phase, round, res.MBps, res.WallS, res.CPUS, res.UserS, res.SysS, res.MaxRSSMiB, mib(res.Served.Content+res.Served.Other), res.Served.Requests, res.ServerCPUS)
	return res
}

// ceiling reads the whole model from path's server in this process, 16
// ranges of 64 MiB at a time, discarding the bytes: what the server and
// loopback can do with a client that does nothing.
func (r *runner) ceiling(ctx context.Context, path string) error {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true, ReadBufferSize: 256 << 10}
	if r.e.tls() {
		pool, err := certPool(r.e.s.caFile)
		if err != nil {
			return err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	type job struct {
		url      string
		off, len int64
	}
	var jobs []job
	const chunk = 64 << 20
	for _, f := range r.files {
		u := r.e.s.s3URL + "/" + s3Bucket + "/" + s3Prefix + "/" + f.Path
		if path == pathHub {
			u = r.e.s.hubURL + "/" + hubRepo + "/resolve/main/" + f.Path
		}
		for off := int64(0); off < f.Size; off += chunk {
			jobs = append(jobs, job{u, off, min(chunk, f.Size-off)})
		}
	}
	c := r.counter(path)
	before, cpu0 := c.snapshot(), selfCPU()
	start := time.Now()
	ch := make(chan job)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for j := range ch {
				err := func() error {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
					req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", j.off, j.off+j.len-1))
					resp, err := client.Do(req)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
					if err == nil && (resp.StatusCode != http.StatusPartialContent || n != j.len) {
						err = fmt.Errorf("%s: %s, %d bytes of %d", j.url, resp.Status, n, j.len)
					}
					return err
				}()
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("ceiling of %s: %w", path, firstErr)
	}
	res := &result{Tool: "ceiling-" + path, Path: path, Phase: phaseCeiling, Round: 1, WallS: time.Since(start).Seconds()}
	res.ServerCPUS = selfCPU() - cpu0
	res.Served = c.snapshot().sub(before)
	res.MBps = float64(total(r.files)) / 1e6 / res.WallS
	r.rep.Runs = append(r.rep.Runs, res)
	logf("%-13s %-9s: %6.1f MB/s, %.2f s, CPU of server and reader %.2f s", res.Tool, phaseCeiling, res.MBps, res.WallS, res.ServerCPUS)
	return nil
}

func certPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", file)
	}
	return pool, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// interfaces lists the network interfaces this process sees ("lo" alone:
// a namespace of its own, nothing but loopback reachable).
func interfaces() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []string
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 {
			out = append(out, i.Name)
		}
	}
	return out
}
