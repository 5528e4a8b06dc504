package s3source

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

const (
	testKeyID  = "AKIATESTKEYID0000001"
	testSecret = "test-secret-0123456789abcdefghijklmnopqrstuv"
)

// fakeS3 is gofakes3 (a real S3 protocol server, in memory) on loopback.
// gofakes3 ignores If-Match on GET; the wrapper answers 412
// PreconditionFailed as S3 does when If-Match differs from the object's
// current ETag, and records the requests.
type fakeS3 struct {
	backend *s3mem.Backend
	srv     *httptest.Server

	mu   sync.Mutex
	reqs []*http.Request
}

func newFakeS3(t *testing.T) *fakeS3 {
	t.Helper()
	f := &fakeS3{backend: s3mem.New()}
	h := gofakes3.New(f.backend).Server()
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		f.mu.Unlock()
		if im := r.Header.Get("If-Match"); im != "" && r.Method == http.MethodGet {
			bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			obj, err := f.backend.HeadObject(bucket, key)
			if err == nil && `"`+hex.EncodeToString(obj.Hash)+`"` != im {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusPreconditionFailed)
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-Match</Condition></Error>`)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeS3) put(t *testing.T, bucket, key string, body []byte, meta map[string]string) {
	t.Helper()
	if _, err := f.backend.PutObject(bucket, key, meta, bytes.NewReader(body), int64(len(body)), nil); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func (f *fakeS3) bucket(t *testing.T, name string) {
	t.Helper()
	if err := f.backend.CreateBucket(name); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeS3) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

// testEnv points the SDK at endpoint with static keys and nothing else from
// this machine: no shared config, no instance metadata.
func testEnv(t *testing.T, endpoint string) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           testKeyID,
		"AWS_SECRET_ACCESS_KEY":       testSecret,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_WEB_IDENTITY_TOKEN_FILE": "",
		"AWS_ROLE_ARN":                "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_S3":         endpoint,
		"AWS_S3_USE_PATH_STYLE":       "",
		"AWS_CA_BUNDLE":               "",
	} {
		t.Setenv(k, v)
	}
}

func newSource(t *testing.T, uri string, o modelload.SourceOptions) *Source {
	t.Helper()
	src, err := New(context.Background(), uri, o)
	if err != nil {
		t.Fatalf("New(%s): %v", uri, err)
	}
	return src.(*Source)
}

// smallInBucket stores modeltest.Small() under models/llama/, with
// directory markers and a sibling prefix that must not be listed.
func smallInBucket(t *testing.T) (*fakeS3, modeltest.Model) {
	f := newFakeS3(t)
	f.bucket(t, "models")
	m := modeltest.Small()
	for p, b := range m {
		f.put(t, "models", "llama/"+p, b, nil)
	}
	f.put(t, "models", "llama/", nil, nil)
	f.put(t, "models", "llama/onnx/", nil, nil)
	f.put(t, "models", "llama-v2/config.json", []byte("{}"), nil)
	f.put(t, "models", "llama.txt", []byte("not a model"), nil)
	testEnv(t, f.srv.URL)
	return f, m
}

func readRange(t *testing.T, src modelload.Source, f modelload.File, off, n int64) []byte {
	t.Helper()
	rc, err := src.Open(context.Background(), f, off, n)
	if err != nil {
		t.Fatalf("Open(%s, %d, %d): %v", f.Path, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s at %d: %v", f.Path, off, err)
	}
	return b
}

func TestListAndOpenRanges(t *testing.T) {
	_, m := smallInBucket(t)
	for _, uri := range []string{"s3://models/llama", "s3://models/llama/"} {
		t.Run(uri, func(t *testing.T) {
			src := newSource(t, uri, modelload.SourceOptions{})
			src.pageSize = 2 // several ListObjectsV2 pages
			l, err := src.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range l.Files {
				got = append(got, f.Path)
				want := m[f.Path]
				if f.Size != int64(len(want)) {
					t.Errorf("%s: size %d, want %d", f.Path, f.Size, len(want))
				}
				sum := md5.Sum(want)
				if f.MD5 != hex.EncodeToString(sum[:]) {
					t.Errorf("%s: MD5 %q, want %x (single-part, unencrypted: the ETag)", f.Path, f.MD5, sum)
				}
				if f.SHA256 != "" {
					t.Errorf("%s: SHA256 %q without a checksum", f.Path, f.SHA256)
				}
				if f.Key != "llama/"+f.Path || f.Version == "" {
					t.Errorf("%s: key %q version %q", f.Path, f.Key, f.Version)
				}
			}
			if strings.Join(got, ",") != strings.Join(m.Paths(), ",") {
				t.Fatalf("paths %v, want %v", got, m.Paths())
			}
			if !strings.HasPrefix(l.Revision, "sha256:") || len(l.Revision) != len("sha256:")+64 {
				t.Errorf("revision %q", l.Revision)
			}

			// Every file in 1 MiB-3 ranges, then tails from an offset.
			for _, f := range l.Files {
				want := m[f.Path]
				var buf []byte
				const chunk = 1<<20 - 3
				for off := int64(0); off < f.Size; off += chunk {
					buf = append(buf, readRange(t, src, f, off, min(chunk, f.Size-off))...)
				}
				if !bytes.Equal(buf, want) {
					t.Errorf("%s: ranged reads differ (%d bytes, want %d)", f.Path, len(buf), len(want))
				}
				if b := readRange(t, src, f, 0, -1); !bytes.Equal(b, want) {
					t.Errorf("%s: whole read differs", f.Path)
				}
				if f.Size > 10 {
					if b := readRange(t, src, f, 10, -1); !bytes.Equal(b, want[10:]) {
						t.Errorf("%s: tail read differs", f.Path)
					}
				}
			}
		})
	}
}

func TestRevisionFollowsContent(t *testing.T) {
	f, _ := smallInBucket(t)
	src := newSource(t, "s3://models/llama", modelload.SourceOptions{})
	l1, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l2, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l1.Revision != l2.Revision {
		t.Errorf("revision changed without a change: %s, %s", l1.Revision, l2.Revision)
	}
	f.put(t, "models", "llama/config.json", []byte(`{"changed":true}`), nil)
	l3, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l3.Revision == l1.Revision {
		t.Errorf("revision %s unchanged after config.json changed", l3.Revision)
	}
}

func TestWholeBucket(t *testing.T) {
	f := newFakeS3(t)
	f.bucket(t, "flat")
	f.put(t, "flat", "a.bin", []byte("aaaa"), nil)
	f.put(t, "flat", "sub/b.bin", []byte("bb"), nil)
	testEnv(t, f.srv.URL)
	l, err := newSource(t, "s3://flat", modelload.SourceOptions{}).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 2 || l.Files[0].Path != "a.bin" || l.Files[1].Path != "sub/b.bin" {
		t.Fatalf("files %+v", l.Files)
	}
}

func TestSingleObjectPrefix(t *testing.T) {
	_, m := smallInBucket(t)
	src := newSource(t, "s3://models/llama/onnx/model.onnx", modelload.SourceOptions{})
	l, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 1 || l.Files[0].Path != "model.onnx" || l.Files[0].Key != "llama/onnx/model.onnx" {
		t.Fatalf("files %+v, want the one file model.onnx", l.Files)
	}
	want := m["onnx/model.onnx"]
	if l.Files[0].Size != int64(len(want)) {
		t.Errorf("size %d, want %d", l.Files[0].Size, len(want))
	}
	if b := readRange(t, src, l.Files[0], 100, 1000); !bytes.Equal(b, want[100:1100]) {
		t.Errorf("range differs")
	}
	// "llama.txt" is an object; "llama" is a directory and wins over it.
	l, err = newSource(t, "s3://models/llama.txt", modelload.SourceOptions{}).List(context.Background())
	if err != nil || len(l.Files) != 1 || l.Files[0].Path != "llama.txt" {
		t.Fatalf("llama.txt: %+v, %v", l, err)
	}
}

func TestChecksumsAndEncryption(t *testing.T) {
	f := newFakeS3(t)
	f.bucket(t, "sums")
	body := []byte("some model bytes")
	sha := sha256.Sum256(body)
	md := md5.Sum(body)
	// gofakes3 stores X-Amz-* request headers as metadata and sends them
	// back on HEAD, which is how S3 reports checksums and encryption.
	f.put(t, "sums", "m/full.bin", body, map[string]string{
		"X-Amz-Checksum-Sha256": base64.StdEncoding.EncodeToString(sha[:]),
		"X-Amz-Checksum-Type":   "FULL_OBJECT",
	})
	f.put(t, "sums", "m/composite.bin", body, map[string]string{
		"X-Amz-Checksum-Sha256": base64.StdEncoding.EncodeToString(sha[:]) + "-2",
		"X-Amz-Checksum-Type":   "COMPOSITE",
	})
	crc64 := binary.BigEndian.AppendUint64(nil, crc64.Checksum(body, crc64.MakeTable(0x9a6c9329ac4bc9b5)))
	crc32c := binary.BigEndian.AppendUint32(nil, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	// What S3 sends for an object uploaded by a current SDK without a
	// checksum algorithm chosen: CRC64NVME, full object.
	f.put(t, "sums", "m/crc64.bin", body, map[string]string{
		"X-Amz-Checksum-Crc64nvme": base64.StdEncoding.EncodeToString(crc64),
		"X-Amz-Checksum-Type":      "FULL_OBJECT",
	})
	// A single-part upload's CRC32C, from a store that sends no type.
	f.put(t, "sums", "m/crc32c.bin", body, map[string]string{
		"X-Amz-Checksum-Crc32c": base64.StdEncoding.EncodeToString(crc32c),
	})
	f.put(t, "sums", "m/crc32c-composite.bin", body, map[string]string{
		"X-Amz-Checksum-Crc32c": base64.StdEncoding.EncodeToString(crc32c),
		"X-Amz-Checksum-Type":   "COMPOSITE",
	})
	f.put(t, "sums", "m/kms.bin", body, map[string]string{"X-Amz-Server-Side-Encryption": "aws:kms"})
	f.put(t, "sums", "m/sse-s3.bin", body, map[string]string{"X-Amz-Server-Side-Encryption": "AES256"})
	testEnv(t, f.srv.URL)
	l, err := newSource(t, "s3://sums/m", modelload.SourceOptions{}).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mdHex := hex.EncodeToString(md[:])
	want := map[string][4]string{ // path: SHA256, CRC64NVME, CRC32C, MD5
		"full.bin":             {hex.EncodeToString(sha[:]), "", "", mdHex},
		"composite.bin":        {"", "", "", mdHex},
		"crc64.bin":            {"", hex.EncodeToString(crc64), "", mdHex},
		"crc32c.bin":           {"", "", hex.EncodeToString(crc32c), mdHex},
		"crc32c-composite.bin": {"", "", "", mdHex},
		"kms.bin":              {"", "", "", ""},
		"sse-s3.bin":           {"", "", "", mdHex},
	}
	if len(l.Files) != len(want) {
		t.Fatalf("files %+v", l.Files)
	}
	for _, fl := range l.Files {
		if got := [4]string{fl.SHA256, fl.CRC64NVME, fl.CRC32C, fl.MD5}; got != want[fl.Path] {
			t.Errorf("%s: sha256, crc64nvme, crc32c, md5 %q; want %q", fl.Path, got, want[fl.Path])
		}
	}
	var heads int
	for _, r := range f.requests() {
		if r.Method == http.MethodHead {
			heads++
			if r.Header.Get("X-Amz-Checksum-Mode") != "ENABLED" {
				t.Errorf("HEAD %s without x-amz-checksum-mode: ENABLED", r.URL.Path)
			}
		}
	}
	if heads != len(want) {
		t.Errorf("%d HEADs, want %d", heads, len(want))
	}
}

func TestDigestRules(t *testing.T) {
	const etag = `"0123456789abcdef0123456789ABCDEF"`
	if got := etagMD5(etag, "", ""); got != "0123456789abcdef0123456789abcdef" {
		t.Errorf("plain: %q", got)
	}
	for _, c := range []struct {
		etag, sse, ssec string
	}{
		{`"0123456789abcdef0123456789abcdef-3"`, "", ""}, // multipart
		{etag, "aws:kms", ""},
		{etag, "aws:kms:dsse", ""},
		{etag, "", "AES256"}, // SSE-C
		{`"not-hex-not-hex-not-hex-not-hex!"`, "", ""},
	} {
		if got := etagMD5(c.etag, types.ServerSideEncryption(c.sse), c.ssec); got != "" {
			t.Errorf("%+v: md5 %q, want none", c, got)
		}
	}
	sum := sha256.Sum256([]byte("x"))
	b64 := base64.StdEncoding.EncodeToString(sum[:])
	if got := fullObjectChecksum(b64, 32, "", `"abc"`); got != hex.EncodeToString(sum[:]) {
		t.Errorf("single-part without type: %q", got)
	}
	if got := fullObjectChecksum(b64, 32, "", `"abc-2"`); got != "" {
		t.Errorf("multipart without type: %q, want none", got)
	}
	if got := fullObjectChecksum(b64, 32, "COMPOSITE", `"abc"`); got != "" {
		t.Errorf("composite: %q, want none", got)
	}
	if got := fullObjectChecksum("AAAA", 32, "FULL_OBJECT", `"abc"`); got != "" {
		t.Errorf("short digest: %q, want none", got)
	}
	if got := fullObjectChecksum(b64, 8, "FULL_OBJECT", `"abc"`); got != "" {
		t.Errorf("a SHA-256's length as a CRC-64: %q, want none", got)
	}
}

func TestMissingBucketAndPrefix(t *testing.T) {
	_, _ = smallInBucket(t)
	_, err := newSource(t, "s3://no-such-bucket/llama", modelload.SourceOptions{}).List(context.Background())
	wantKind(t, err, modelload.KindNotFound)
	if !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) || !strings.Contains(err.Error(), "s3://no-such-bucket/") {
		t.Errorf("message %q does not name the bucket", err)
	}
	_, err = newSource(t, "s3://models/absent", modelload.SourceOptions{}).List(context.Background())
	wantKind(t, err, modelload.KindNotFound)
	if !strings.Contains(err.Error(), `"absent"`) {
		t.Errorf("message %q does not name the prefix", err)
	}
}

func TestBadKeyRefused(t *testing.T) {
	f := newFakeS3(t)
	f.bucket(t, "evil")
	f.put(t, "evil", "m/ok.bin", []byte("ok"), nil)
	f.put(t, "evil", "m/../../etc/passwd", []byte("root"), nil)
	testEnv(t, f.srv.URL)
	_, err := newSource(t, "s3://evil/m", modelload.SourceOptions{}).List(context.Background())
	wantKind(t, err, modelload.KindIntegrity)
	if !strings.Contains(err.Error(), `"m/../../etc/passwd"`) || !strings.Contains(err.Error(), "..") {
		t.Errorf("message %q does not name the key", err)
	}
}

// s3Error serves one S3 XML error for every request. gofakes3 does not
// check signatures, so refused credentials are asserted against this
// server answering as S3 does (the body carries the access key id, as
// S3's InvalidAccessKeyId does, to check that it is not repeated).
func s3Error(t *testing.T, status int, code string, hdr map[string]string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s message</Message><AWSAccessKeyId>%s</AWSAccessKeyId><RequestId>R1</RequestId></Error>`, code, code, testKeyID)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAuthErrors(t *testing.T) {
	for code, hint := range map[string]string{
		"AccessDenied":          "not allowed",
		"InvalidAccessKeyId":    "AWS_ACCESS_KEY_ID",
		"SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY",
	} {
		t.Run(code, func(t *testing.T) {
			srv := s3Error(t, http.StatusForbidden, code, nil)
			testEnv(t, srv.URL)
			src := newSource(t, "s3://models/llama", modelload.SourceOptions{})
			_, err := src.List(context.Background())
			wantKind(t, err, modelload.KindAuth)
			msg := err.Error()
			if !strings.Contains(msg, code) || !strings.Contains(msg, hint) || !strings.Contains(msg, "s3://models/llama/") {
				t.Errorf("message %q: want the code %s, the hint %q and the URI", msg, code, hint)
			}
			if strings.Contains(msg, testKeyID) || strings.Contains(msg, testSecret) {
				t.Errorf("message %q contains a credential", msg)
			}
			_, err = src.Open(context.Background(), modelload.File{Path: "x", Key: "llama/x", Size: 10}, 0, 10)
			wantKind(t, err, modelload.KindAuth)
		})
	}
}

func TestWrongRegion(t *testing.T) {
	srv := s3Error(t, http.StatusMovedPermanently, "PermanentRedirect", map[string]string{"X-Amz-Bucket-Region": "eu-central-1"})
	testEnv(t, srv.URL)
	_, err := newSource(t, "s3://models/llama", modelload.SourceOptions{}).List(context.Background())
	wantKind(t, err, modelload.KindUsage)
	if !strings.Contains(err.Error(), "eu-central-1") || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("message %q: want the bucket's region and AWS_REGION", err)
	}
}

func TestNoCredentials(t *testing.T) {
	srv := s3Error(t, http.StatusForbidden, "AccessDenied", nil)
	testEnv(t, srv.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	_, err := newSource(t, "s3://models/llama", modelload.SourceOptions{}).List(context.Background())
	wantKind(t, err, modelload.KindAuth)
	if !strings.Contains(err.Error(), "no usable AWS credentials") {
		t.Errorf("message %q", err)
	}
}

func TestRetryableAndChanged(t *testing.T) {
	srv := s3Error(t, http.StatusServiceUnavailable, "SlowDown", map[string]string{"Retry-After": "7"})
	testEnv(t, srv.URL)
	f := modelload.File{Path: "x", Key: "llama/x", Size: 10, Version: `"abc"`}
	_, err := newSource(t, "s3://models/llama", modelload.SourceOptions{}).Open(context.Background(), f, 0, 10)
	e := wantKind(t, err, modelload.KindNetwork)
	if !e.Retry || e.RetryAfter != 7*time.Second {
		t.Errorf("SlowDown: retry %v after %v, want true after 7s", e.Retry, e.RetryAfter)
	}

	fs, m := smallInBucket(t)
	src := newSource(t, "s3://models/llama", modelload.SourceOptions{})
	l, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var cfg modelload.File
	for _, f := range l.Files {
		if f.Path == "config.json" {
			cfg = f
		}
	}
	if b := readRange(t, src, cfg, 0, 10); !bytes.Equal(b, m["config.json"][:10]) {
		t.Fatal("first range differs")
	}
	fs.put(t, "models", "llama/config.json", bytes.Repeat([]byte("x"), len(m["config.json"])), nil)
	_, err = src.Open(context.Background(), cfg, 10, 10)
	wantKind(t, err, modelload.KindIntegrity)
	if !strings.Contains(err.Error(), "object changed during download") {
		t.Errorf("message %q", err)
	}
	var sawIfMatch bool
	for _, r := range fs.requests() {
		if r.Method == http.MethodGet && r.Header.Get("If-Match") == cfg.Version {
			sawIfMatch = true
		}
	}
	if !sawIfMatch {
		t.Errorf("no GET carried If-Match %s", cfg.Version)
	}
}

// TestEndpointFromEnv loads through AWS_ENDPOINT_URL_S3 (and the generic
// AWS_ENDPOINT_URL) at 127.0.0.1 with no path-style setting: requests must
// go to the endpoint's host with the bucket in the path.
func TestEndpointFromEnv(t *testing.T) {
	for _, name := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		t.Run(name, func(t *testing.T) {
			f, _ := smallInBucket(t)
			t.Setenv("AWS_ENDPOINT_URL_S3", "")
			t.Setenv(name, f.srv.URL)
			src := newSource(t, "s3://models/llama", modelload.SourceOptions{})
			if _, err := src.List(context.Background()); err != nil {
				t.Fatal(err)
			}
			if r := src.client.Options().Region; r != DefaultRegion {
				t.Errorf("region %q, want %s", r, DefaultRegion)
			}
			host := strings.TrimPrefix(f.srv.URL, "http://")
			for _, r := range f.requests() {
				if r.Host != host || !strings.HasPrefix(r.URL.Path, "/models") {
					t.Errorf("%s %s%s: want path-style on %s", r.Method, r.Host, r.URL.Path, host)
				}
			}
		})
	}
}

// recorder is an HTTP transport that answers every request with an empty
// listing (and HEAD with 404) and records where it was sent: no network at
// all.
type recorder struct {
	mu   sync.Mutex
	urls []string
}

func (rt *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.urls = append(rt.urls, r.URL.Host+r.URL.Path)
	rt.mu.Unlock()
	if r.Method == http.MethodHead {
		return &http.Response{StatusCode: 404, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	}
	body := `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>models</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>`
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/xml"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r}, nil
}

func TestAddressingStyle(t *testing.T) {
	for _, c := range []struct {
		name     string
		endpoint string
		pathEnv  string
		force    bool
		want     string
	}{
		{"virtual-host", "https://s3.example.test", "", false, "models.s3.example.test/"},
		{"option", "https://s3.example.test", "", true, "s3.example.test/models"},
		{"env", "https://s3.example.test", "true", false, "s3.example.test/models"},
		{"localhost", "http://localhost:9000", "", false, "localhost:9000/models"},
		{"ipv6", "http://[::1]:9000", "", false, "[::1]:9000/models"},
		{"no-scheme", "s3.example.test", "", false, "models.s3.example.test/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			testEnv(t, c.endpoint)
			t.Setenv("AWS_S3_USE_PATH_STYLE", c.pathEnv)
			t.Setenv("AWS_REGION", "eu-west-3")
			rt := &recorder{}
			src := newSource(t, "s3://models/llama", modelload.SourceOptions{S3PathStyle: c.force, HTTPClient: &http.Client{Transport: rt}})
			if r := src.client.Options().Region; r != "eu-west-3" {
				t.Errorf("region %q, want eu-west-3 from AWS_REGION", r)
			}
			_, err := src.List(context.Background())
			wantKind(t, err, modelload.KindNotFound) // the empty listing
			if len(rt.urls) == 0 || !strings.HasPrefix(rt.urls[0], c.want) {
				t.Errorf("requests went to %v, want %s...", rt.urls, c.want)
			}
		})
	}
}

// TestGetenvCredentials: keys given through SourceOptions.Getenv (not the
// process environment) sign the requests.
func TestGetenvCredentials(t *testing.T) {
	testEnv(t, "https://s3.example.test")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	env := map[string]string{
		"AWS_ACCESS_KEY_ID":     "AKIAGETENV0000000001",
		"AWS_SECRET_ACCESS_KEY": "getenv-secret",
		"AWS_DEFAULT_REGION":    "ap-south-1",
		"AWS_ENDPOINT_URL_S3":   "http://127.0.0.1:1",
	}
	var auth string
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		auth = r.Header.Get("Authorization")
		return (&recorder{}).RoundTrip(r)
	})}
	src := newSource(t, "s3://models/llama", modelload.SourceOptions{Getenv: func(k string) string { return env[k] }, HTTPClient: client})
	_, _ = src.List(context.Background())
	if !strings.Contains(auth, "Credential=AKIAGETENV0000000001/") || !strings.Contains(auth, "/ap-south-1/s3/") {
		t.Errorf("Authorization %q: want the Getenv key and region", auth)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestBadURIs(t *testing.T) {
	testEnv(t, "")
	for _, uri := range []string{"s3://", "s3:///prefix", "gs://b/p"} {
		_, err := New(context.Background(), uri, modelload.SourceOptions{})
		wantKind(t, err, modelload.KindUsage)
	}
	src, err := modelload.NewSource(context.Background(), "s3://b/p", modelload.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := src.(*Source); !ok {
		t.Errorf("NewSource(s3://) = %T: the scheme is not registered", src)
	}
}

func wantKind(t *testing.T, err error, k modelload.Kind) *modelload.Error {
	t.Helper()
	var e *modelload.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want a *modelload.Error of kind %v", err, err, k)
	}
	if e.Kind != k {
		t.Fatalf("error %q is %v, want %v", err, e.Kind, k)
	}
	return e
}

func init() {
	// Nothing in these tests may reach a real AWS endpoint.
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// TestCABundle: an HTTPS endpoint whose certificate only AWS_CA_BUNDLE
// trusts, with the shared HTTP client (the SDK accepts a CA bundle only
// with its own buildable client, which copies the shared client's
// settings).
func TestCABundle(t *testing.T) {
	be := s3mem.New()
	if err := be.CreateBucket("tls"); err != nil {
		t.Fatal(err)
	}
	if _, err := be.PutObject("tls", "m/w.bin", nil, strings.NewReader("weights"), 7, nil); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(gofakes3.New(be).Server())
	t.Cleanup(srv.Close)
	testEnv(t, srv.URL)
	src := newSource(t, "s3://tls/m", modelload.SourceOptions{})
	_, err := src.List(context.Background())
	wantKind(t, err, modelload.KindNetwork) // unknown authority

	bundle := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CA_BUNDLE", bundle)
	src = newSource(t, "s3://tls/m", modelload.SourceOptions{})
	l, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 1 || string(readRange(t, src, l.Files[0], 1, 3)) != "eig" {
		t.Errorf("files %+v", l.Files)
	}
}
