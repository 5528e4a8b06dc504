package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Paths a client loads from.
const (
	pathS3  = "s3"
	pathHub = "hub"
)

// tool is one client configuration.
type tool struct {
	Name  string `json:"name"`
	Label string `json:"label"`
	Path  string `json:"path"` // pathS3 or pathHub
	Ours  bool   `json:"ours"`
	// argv returns the command line and the environment (besides the
	// common one) for a load into dest.
	argv func(e *env, dest string) ([]string, []string)
}

// env is what the clients' command lines are built from.
type env struct {
	s *servers
	// home is the fake HOME: empty AWS, rclone and aria2 configurations.
	home string
	tmp  string
	// bins
	loader, rclone, aws, aria2c string
	loaderArgs                  []string
	urlsFile                    string
	awsDefault, awsTuned        string
}

const (
	accessKey = "BENCHLOADERKEY000001"
	secretKey = "bench-loader-secret-0123456789abcdefghij"
	region    = "us-east-1"
)

// baseEnv is every client's whole environment apart from its own
// variables: nothing is inherited (no proxy, no credentials, no config),
// HOME is empty, and the AWS tools may not ask the instance metadata.
func (e *env) baseEnv() []string {
	return []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + e.home,
		"XDG_CONFIG_HOME=" + filepath.Join(e.home, ".config"),
		"XDG_CACHE_HOME=" + filepath.Join(e.home, ".cache"),
		"TMPDIR=" + e.tmp,
		"LANG=C.UTF-8",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(e.home, ".aws", "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(e.home, ".aws", "credentials"),
		"RCLONE_CONFIG=" + filepath.Join(e.home, ".config", "rclone", "rclone.conf"),
	}
}

func (e *env) awsCreds() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + accessKey, "AWS_SECRET_ACCESS_KEY=" + secretKey}
}

// setup writes the fake HOME, the AWS CLI configurations and aria2's input
// file.
func (e *env) setup(files []modelFile) error {
	for _, d := range []string{".aws", ".config/rclone", ".cache", ".aria2"} {
		if err := os.MkdirAll(filepath.Join(e.home, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(e.tmp, 0o755); err != nil {
		return err
	}
	for _, f := range []string{".aws/config", ".aws/credentials", ".config/rclone/rclone.conf"} {
		if err := os.WriteFile(filepath.Join(e.home, f), nil, 0o644); err != nil {
			return err
		}
	}
	// The CLI's defaults but path-style addressing (which an IP endpoint
	// needs); then the same with more concurrency and larger parts.
	base := "[default]\nregion = " + region + "\ns3 =\n    addressing_style = path\n"
	e.awsDefault = filepath.Join(e.home, ".aws", "config-default")
	e.awsTuned = filepath.Join(e.home, ".aws", "config-tuned")
	if err := os.WriteFile(e.awsDefault, []byte(base), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(e.awsTuned, []byte(base+"    max_concurrent_requests = 16\n    multipart_chunksize = 64MB\n"), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s/%s/resolve/main/%s\n  out=%s\n", e.s.hubURL, hubRepo, f.Path, f.Path)
	}
	e.urlsFile = filepath.Join(e.home, "urls.txt")
	return os.WriteFile(e.urlsFile, []byte(b.String()), 0o644)
}

func (e *env) tls() bool { return e.s.caFile != "" }

// allTools are the clients in their default order.
func allTools() []*tool {
	loaderS3 := func(e *env, dest string) ([]string, []string) {
		args := append([]string{e.loader, "--uri=s3://" + s3Bucket + "/" + s3Prefix, "--dest=" + dest, "--termination-log="}, e.loaderArgs...)
		if e.tls() {
			args = append(args, "--ca-bundle="+e.s.caFile)
		}
		return args, append(e.awsCreds(), "AWS_REGION="+region, "AWS_ENDPOINT_URL_S3="+e.s.s3URL)
	}
	loaderHub := func(e *env, dest string) ([]string, []string) {
		args := append([]string{e.loader, "--uri=hf://" + hubRepo, "--dest=" + dest, "--termination-log="}, e.loaderArgs...)
		if e.tls() {
			args = append(args, "--ca-bundle="+e.s.caFile)
		}
		return args, []string{"HF_ENDPOINT=" + e.s.hubURL}
	}
	rclone := func(extra ...string) func(e *env, dest string) ([]string, []string) {
		return func(e *env, dest string) ([]string, []string) {
			args := append([]string{e.rclone, "copy", "bench:" + s3Bucket + "/" + s3Prefix, dest}, extra...)
			if e.tls() {
				args = append(args, "--ca-cert="+e.s.caFile)
			}
			return args, []string{
				"RCLONE_CONFIG_BENCH_TYPE=s3",
				"RCLONE_CONFIG_BENCH_PROVIDER=Other",
				"RCLONE_CONFIG_BENCH_ENV_AUTH=false",
				"RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=" + accessKey,
				"RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=" + secretKey,
				"RCLONE_CONFIG_BENCH_REGION=" + region,
				"RCLONE_CONFIG_BENCH_ENDPOINT=" + e.s.s3URL,
				"RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true",
			}
		}
	}
	aws := func(tuned bool) func(e *env, dest string) ([]string, []string) {
		return func(e *env, dest string) ([]string, []string) {
			args := []string{e.aws, "s3", "cp", "--recursive", "s3://" + s3Bucket + "/" + s3Prefix, dest,
				"--endpoint-url=" + e.s.s3URL, "--no-progress", "--only-show-errors"}
			if e.tls() {
				args = append(args, "--ca-bundle="+e.s.caFile)
			}
			cfg := e.awsDefault
			if tuned {
				cfg = e.awsTuned
			}
			// AWS_CONFIG_FILE here replaces the empty one of baseEnv.
			return args, append(e.awsCreds(), "AWS_CONFIG_FILE="+cfg, "AWS_PAGER=", "AWS_CLI_AUTO_PROMPT=off")
		}
	}
	aria2 := func(e *env, dest string) ([]string, []string) {
		args := []string{e.aria2c, "--no-conf", "-q", "-x16", "-s16", "-j16", "-i", e.urlsFile, "-d", dest}
		if e.tls() {
			args = append(args, "--ca-certificate="+e.s.caFile)
		}
		return args, nil
	}
	return []*tool{
		{Name: "loader-s3", Label: "mlplane model-loader, s3:// (defaults: 16 ranges of 64 MiB)", Path: pathS3, Ours: true, argv: loaderS3},
		{Name: "loader-hf", Label: "mlplane model-loader, hf:// (defaults: 16 ranges of 64 MiB)", Path: pathHub, Ours: true, argv: loaderHub},
		{Name: "rclone", Label: "rclone copy (defaults: --transfers 4 --multi-thread-streams 4)", Path: pathS3, argv: rclone()},
		{Name: "rclone-tuned", Label: "rclone copy --transfers 16 --multi-thread-streams 16", Path: pathS3, argv: rclone("--transfers=16", "--multi-thread-streams=16")},
		{Name: "aws", Label: "aws s3 cp --recursive (defaults: max_concurrent_requests 10, multipart_chunksize 8MB)", Path: pathS3, argv: aws(false)},
		{Name: "aws-tuned", Label: "aws s3 cp --recursive, max_concurrent_requests 16, multipart_chunksize 64MB", Path: pathS3, argv: aws(true)},
		{Name: "aria2c", Label: "aria2c -x16 -s16 -j16 -i urls.txt (hub resolve URLs)", Path: pathHub, argv: aria2},
	}
}
