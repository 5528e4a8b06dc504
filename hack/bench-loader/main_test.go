package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"hash/crc64"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/modelload"
	_ "github.com/mlplane/mlplane/internal/modelload/hf"
	_ "github.com/mlplane/mlplane/internal/modelload/s3"
)

func quiet(string, ...any) {}

func smallModel(t *testing.T) (string, []modelFile) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	files, err := writeModel(dir, modelSpec{Version: 1, Size: 3<<20 + 5, Shards: 3, Seed: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// The model is deterministic, its shards add up to the size asked for,
// and a second writeModel reuses the directory.
func TestWriteModel(t *testing.T) {
	dir, files := smallModel(t)
	var shards int64
	for _, f := range files {
		if strings.HasSuffix(f.Path, ".safetensors") {
			shards += f.Size
		}
	}
	if shards != 3<<20+5 || len(files) != 3+len(smallFiles) {
		t.Errorf("%d files, shards %d bytes", len(files), shards)
	}
	if err := verifyDir(dir, files, nil, 2); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "model")
	again, err := writeModel(other, modelSpec{Version: 1, Size: 3<<20 + 5, Shards: 3, Seed: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for i := range files {
		if files[i].SHA256 != again[i].SHA256 || files[i].MD5 != again[i].MD5 {
			t.Errorf("%s differs between two writes", files[i].Path)
		}
	}
	var reused bool
	if _, err := writeModel(dir, modelSpec{Version: 1, Size: 3<<20 + 5, Shards: 3, Seed: 1}, func(f string, _ ...any) {
		reused = reused || strings.HasPrefix(f, "reusing")
	}); err != nil || !reused {
		t.Errorf("second write: reused %v, %v", reused, err)
	}
}

// verifyDir fails on a changed byte, a missing file and an extra file, and
// accepts the files it is told to.
func TestVerifyDir(t *testing.T) {
	dir, files := smallModel(t)
	name := filepath.Join(dir, filepath.FromSlash(files[0].Path))
	b, _ := os.ReadFile(name)
	b[len(b)/2] ^= 1
	os.WriteFile(name, b, 0o644)
	if err := verifyDir(dir, files, nil, 2); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("a changed byte: %v", err)
	}
	b[len(b)/2] ^= 1
	os.WriteFile(name, b, 0o644)
	os.WriteFile(filepath.Join(dir, api.ModelManifestFile), []byte("{}"), 0o644)
	if err := verifyDir(dir, files, nil, 2); err == nil || !strings.Contains(err.Error(), "unexpected "+api.ModelManifestFile) {
		t.Errorf("an extra file: %v", err)
	}
	if err := verifyDir(dir, files, map[string]bool{api.ModelManifestFile: true}, 2); err != nil {
		t.Errorf("an allowed file: %v", err)
	}
	os.Remove(filepath.Join(dir, "original", "params.json"))
	if err := verifyDir(dir, files, map[string]bool{api.ModelManifestFile: true}, 2); err == nil || !strings.Contains(err.Error(), "missing original/params.json") {
		t.Errorf("a missing file: %v", err)
	}
}

// The servers serve the model to mlplane's sources as the loader runs
// them (s3:// through the AWS SDK, hf:// through the hub's redirect to its
// CDN), and count what they send.
func TestServersServeTheLoader(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		dir, files := smallModel(t)
		tlsDir := ""
		if withTLS {
			tlsDir = t.TempDir()
		}
		s, err := startServers(dir, files, tlsDir, withTLS, false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		so := modelload.SourceOptions{}
		if withTLS {
			pool, err := modelload.LoadCAs(s.caFile)
			if err != nil {
				t.Fatal(err)
			}
			so.HTTPClient = modelload.NewHTTPClient(pool)
		}
		envs := map[string]map[string]string{
			"s3://" + s3Bucket + "/" + s3Prefix: {
				"AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey, "AWS_REGION": region,
				"AWS_ENDPOINT_URL_S3": s.s3URL, "AWS_EC2_METADATA_DISABLED": "true",
				"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none"),
			},
			"hf://" + hubRepo: {"HF_ENDPOINT": s.hubURL},
		}
		for uri, env := range envs {
			t.Setenv("AWS_CONFIG_FILE", env["AWS_CONFIG_FILE"])
			t.Setenv("AWS_SHARED_CREDENTIALS_FILE", env["AWS_SHARED_CREDENTIALS_FILE"])
			t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			so.Getenv = func(k string) string { return env[k] }
			c := &s.hub
			if strings.HasPrefix(uri, "s3") {
				c = &s.s3
			}
			before := c.snapshot()
			src, err := modelload.NewSource(context.Background(), uri, so)
			if err != nil {
				t.Fatal(err)
			}
			dest := t.TempDir()
			if _, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: uri, Dest: dest, ChunkSize: 1 << 20, Concurrency: 4, ProgressInterval: -1}); err != nil {
				t.Fatalf("tls %v, %s: %v", withTLS, uri, err)
			}
			if err := verifyDir(dest, files, map[string]bool{api.ModelManifestFile: true}, 2); err != nil {
				t.Errorf("tls %v, %s: %v", withTLS, uri, err)
			}
			d := c.snapshot().sub(before)
			if d.Content != total(files) || d.Other == 0 || d.Requests == 0 {
				t.Errorf("tls %v, %s: counted %+v; want %d file bytes and a listing", withTLS, uri, d, total(files))
			}
		}
	}
}

// A ranged GetObject's body hands an *io.LimitedReader of the *os.File to
// the writer's ReadFrom (net/http's response turns that into sendfile),
// with the range's bytes only; countingWriter keeps ReadFrom and counts.
func TestFileSectionUsesReadFrom(t *testing.T) {
	dir, files := smallModel(t)
	b, err := newDiskBackend(s3Bucket, s3Prefix+"/", dir, files, false)
	if err != nil {
		t.Fatal(err)
	}
	key := s3Prefix + "/" + files[0].Path
	want, _ := os.ReadFile(filepath.Join(dir, files[0].Path))
	obj, err := b.GetObject(s3Bucket, key, &gofakes3.ObjectRangeRequest{Start: 10, End: 99})
	if err != nil {
		t.Fatal(err)
	}
	var rec recordReadFrom
	n, err := io.Copy(&rec, obj.Contents)
	obj.Contents.Close()
	lr, ok := rec.src.(*io.LimitedReader)
	if err != nil || n != 90 || !ok || !bytes.Equal(rec.buf.Bytes(), want[10:100]) {
		t.Fatalf("copied %d bytes (%v), source %T", n, err, rec.src)
	}
	if _, ok := lr.R.(*os.File); !ok {
		t.Errorf("the limited reader reads a %T, not an *os.File", lr.R)
	}

	var c counter
	h := c.count(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, err := b.GetObject(s3Bucket, key, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer o.Contents.Close()
		io.Copy(w, o.Contents)
	}), func(*http.Request) bool { return true })
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, want) || c.content.Load() != int64(len(want)) || c.requests.Load() != 1 {
		t.Errorf("%d bytes (want %d), counted %d in %d requests", len(got), len(want), c.content.Load(), c.requests.Load())
	}
}

type recordReadFrom struct {
	src io.Reader
	buf bytes.Buffer
}

func (r *recordReadFrom) Write(p []byte) (int, error) { return r.buf.Write(p) }

func (r *recordReadFrom) ReadFrom(src io.Reader) (int64, error) {
	r.src = src
	return io.Copy(&r.buf, src)
}

// summarize takes medians per client and compares the loader with the
// fastest other client, per path, per round and overall.
func TestSummarize(t *testing.T) {
	rep := &report{Rounds: 3}
	add := func(tool, path string, mbps ...float64) {
		for i, x := range mbps {
			rep.Runs = append(rep.Runs, &result{Tool: tool, Path: path, Phase: phaseRound, Round: i + 1, MBps: x, MaxRSSMiB: 30})
		}
	}
	add("loader-s3", pathS3, 300, 330, 310)
	add("loader-hf", pathHub, 400, 390, 410)
	add("rclone", pathS3, 100, 200, 150)
	add("aria2c", pathHub, 250, 260, 240)
	rep.Runs = append(rep.Runs, &result{Tool: "aria2c", Path: pathHub, Phase: phaseRound, Round: 3, Err: "wrong result"})
	var tools []*tool
	for _, t := range allTools() {
		if t.Name == "loader-s3" || t.Name == "loader-hf" || t.Name == "rclone" || t.Name == "aria2c" {
			tools = append(tools, t)
		}
	}
	rep.summarize(tools)
	byScope := map[string]*comparison{}
	for _, c := range rep.Comparisons {
		byScope[c.Scope] = c
	}
	s3, hub, all := byScope[pathS3], byScope[pathHub], byScope["all"]
	if s3 == nil || s3.OursMB != 310 || s3.OtherMB != 150 || s3.Fastest != "rclone" || len(s3.Paired) != 3 || math.Abs(s3.PairedMedian-310.0/150) > 1e-9 {
		t.Errorf("s3: %+v", s3)
	}
	if hub == nil || hub.OursMB != 400 || hub.OtherMB != 250 {
		t.Errorf("hub: %+v", hub)
	}
	if all == nil || all.Ours != "loader-hf" || all.Fastest != "aria2c" {
		t.Errorf("all: %+v", all)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "| **loader-s3** | s3 | 3 | 310.0 |") || !strings.Contains(buf.String(), "goal < 256 MiB: met") {
		t.Errorf("report:\n%s", buf.String())
	}
}

// With --s3-crc64nvme, HEAD carries each object's full-object CRC64NVME
// (computed here with hash/crc64 and the NVME polynomial), without it none.
func TestDiskBackendCRC64NVME(t *testing.T) {
	dir, files := smallModel(t)
	for _, crc := range []bool{false, true} {
		b, err := newDiskBackend(s3Bucket, s3Prefix+"/", dir, files, crc)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			o, err := b.HeadObject(s3Bucket, s3Prefix+"/"+f.Path)
			if err != nil {
				t.Fatal(err)
			}
			content, _ := os.ReadFile(filepath.Join(dir, f.Path))
			want, wantType := "", ""
			if crc {
				sum := crc64.Checksum(content, crc64.MakeTable(0x9a6c9329ac4bc9b5))
				want, wantType = base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, sum)), "FULL_OBJECT"
			}
			if got := o.Metadata["X-Amz-Checksum-Crc64nvme"]; got != want || o.Metadata["X-Amz-Checksum-Type"] != wantType {
				t.Errorf("crc %v, %s: checksum %q type %q, want %q %q", crc, f.Path, got, o.Metadata["X-Amz-Checksum-Type"], want, wantType)
			}
		}
	}
}
