package modelload

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// memSource serves a model from memory. hook, when set, may replace any
// Open (attempt counts the Opens of that file so far, from 0).
type memSource struct {
	m      modeltest.Model
	lists  atomic.Int64
	opens  atomic.Int64
	mu     sync.Mutex
	tries  map[string]int
	hook   func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error)
	digest string // the digest listed: "sha256", "crc64nvme", "crc32c", "md5" or "" (none)
}

// sums are the digests of b by algorithm, computed with other
// implementations than the engine's: hash/crc64's table for CRC-64/NVME
// (the polynomial S3 documents), hash/crc32 for CRC-32C.
func sums(b []byte) map[string]string {
	md := md5.Sum(b)
	return map[string]string{
		"sha256":    modeltest.SHA256(b),
		"crc64nvme": fmt.Sprintf("%016x", crc64.Checksum(b, crc64.MakeTable(0x9a6c9329ac4bc9b5))),
		"crc32c":    fmt.Sprintf("%08x", crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))),
		"md5":       hex.EncodeToString(md[:]),
	}
}

func (s *memSource) List(context.Context) (*Listing, error) {
	s.lists.Add(1)
	l := &Listing{Revision: "rev1"}
	for _, p := range s.m.Paths() {
		f := File{Path: p, Size: int64(len(s.m[p])), Key: p}
		sum := sums(s.m[p])[s.digest]
		switch s.digest {
		case "sha256":
			f.SHA256 = sum
		case "crc64nvme":
			f.CRC64NVME = sum
		case "crc32c":
			f.CRC32C = sum
		case "md5":
			f.MD5 = sum
		}
		l.Files = append(l.Files, f)
	}
	return l, nil
}

func (s *memSource) Open(ctx context.Context, f File, off, n int64) (io.ReadCloser, error) {
	s.opens.Add(1)
	s.mu.Lock()
	if s.tries == nil {
		s.tries = map[string]int{}
	}
	attempt := s.tries[f.Path]
	s.tries[f.Path]++
	s.mu.Unlock()
	b := s.m[f.Key]
	end := int64(len(b))
	if n >= 0 {
		end = off + n
	}
	body := b[off:end]
	if s.hook != nil {
		if rc, err := s.hook(f, off, n, attempt, body); rc != nil || err != nil {
			return rc, err
		}
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// cutReader returns its bytes up to cut, then a reset connection.
type cutReader struct {
	r   io.Reader
	cut int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.cut <= 0 {
		return 0, fmt.Errorf("read tcp: %w", io.ErrUnexpectedEOF)
	}
	if len(p) > c.cut {
		p = p[:c.cut]
	}
	n, err := c.r.Read(p)
	c.cut -= n
	return n, err
}

func fetchOpts(t *testing.T, dest string) Options {
	return Options{URI: "mem://bucket/model", Dest: dest, ChunkSize: 256 << 10, Concurrency: 4,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, ProgressInterval: -1,
		FreeSpace: func(string) (int64, error) { return 1 << 40, nil }}
}

func TestFetchSmallModel(t *testing.T) {
	for _, digest := range []string{"", "sha256", "crc64nvme", "crc32c", "md5"} {
		t.Run("digest="+digest, func(t *testing.T) {
			m := modeltest.Small()
			src := &memSource{m: m, digest: digest}
			dest := t.TempDir()
			res, err := Fetch(context.Background(), src, fetchOpts(t, dest))
			if err != nil {
				t.Fatal(err)
			}
			modeltest.CheckDir(t, dest, m)
			if res.Fetched != m.Size() || res.Reused != 0 {
				t.Errorf("fetched %d, reused %d; want %d, 0", res.Fetched, res.Reused, m.Size())
			}
			var man Manifest
			b, _ := os.ReadFile(filepath.Join(dest, ManifestName))
			if err := json.Unmarshal(b, &man); err != nil {
				t.Fatal(err)
			}
			if man.URI != "mem://bucket/model" || man.Revision != "rev1" || man.Bytes != m.Size() || len(man.Files) != len(m) {
				t.Errorf("manifest %+v", man)
			}
			for _, f := range man.Files {
				// The manifest has the digest checked: the source's, or none.
				got := map[string]string{"sha256": f.SHA256, "crc64nvme": f.CRC64NVME, "crc32c": f.CRC32C, "md5": f.MD5}
				want := map[string]string{"sha256": "", "crc64nvme": "", "crc32c": "", "md5": ""}
				if digest != "" {
					want[digest] = sums(m[f.Path])[digest]
				}
				if !maps.Equal(got, want) {
					t.Errorf("manifest digests of %s = %v, want %v", f.Path, got, want)
				}
			}
			if _, err := os.Stat(filepath.Join(dest, partialDir)); !os.IsNotExist(err) {
				t.Errorf("partial directory left behind: %v", err)
			}
		})
	}
}

func TestFetchCompleteIsNotFetchedAgain(t *testing.T) {
	m := modeltest.Small()
	src := &memSource{m: m}
	dest := t.TempDir()
	if _, err := Fetch(context.Background(), src, fetchOpts(t, dest)); err != nil {
		t.Fatal(err)
	}
	lists, opens := src.lists.Load(), src.opens.Load()
	res, err := Fetch(context.Background(), src, fetchOpts(t, dest))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || res.Fetched != 0 || src.lists.Load() != lists || src.opens.Load() != opens {
		t.Errorf("second Fetch: complete=%v fetched=%d lists %d->%d opens %d->%d; want no source call", res.Complete, res.Fetched, lists, src.lists.Load(), opens, src.opens.Load())
	}
	// Other patterns make it a different model: listed again, but the
	// verified files in place are kept.
	o := fetchOpts(t, dest)
	o.Ignore = []string{"onnx/"}
	res, err = Fetch(context.Background(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Complete || res.Fetched != 0 || src.opens.Load() != opens {
		t.Errorf("refetch with patterns: complete=%v fetched=%d opens=%d->%d", res.Complete, res.Fetched, opens, src.opens.Load())
	}
}

// A cut connection resumes the range where it stopped: every byte crosses
// the network once.
func TestFetchResumesCutRanges(t *testing.T) {
	m := modeltest.Small()
	src := &memSource{m: m, hook: func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		if attempt < 3 && len(body) > 1000 {
			return io.NopCloser(&cutReader{r: bytes.NewReader(body), cut: 1000}), nil
		}
		return nil, nil
	}}
	dest := t.TempDir()
	res, err := Fetch(context.Background(), src, fetchOpts(t, dest))
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if res.Fetched != m.Size() {
		t.Errorf("fetched %d bytes for a %d-byte model: ranges were not resumed", res.Fetched, m.Size())
	}
}

// A loader killed halfway resumes from its partial files; verified files
// are not rewritten.
func TestFetchRestartResumes(t *testing.T) {
	m := modeltest.Small()
	big := "model-00001-of-00002.safetensors"
	src := &memSource{m: m, hook: func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		if f.Path == big && off >= 1<<20 {
			return nil, Errorf(KindAuth, "token expired")
		}
		return nil, nil
	}}
	dest := t.TempDir()
	o := fetchOpts(t, dest)
	o.Concurrency = 1
	_, err := Fetch(context.Background(), src, o)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindAuth {
		t.Fatalf("first run: %v; want the KindAuth error", err)
	}
	cfg := filepath.Join(dest, "config.json")
	before, err := os.Stat(cfg)
	if err != nil {
		t.Fatalf("config.json was verified before the failure and should be in place: %v", err)
	}
	src2 := &memSource{m: m}
	res, err := Fetch(context.Background(), src2, o)
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if res.Reused < 1<<20 || res.Fetched+res.Reused != m.Size() {
		t.Errorf("second run fetched %d, reused %d of %d bytes; want at least 1 MiB reused", res.Fetched, res.Reused, m.Size())
	}
	after, _ := os.Stat(cfg)
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Error("config.json was rewritten by the second run")
	}
}

func TestFetchChecksumMismatch(t *testing.T) {
	m := modeltest.Small()
	corrupt := func(times int) func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		return func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
			if f.Path == "tokenizer.json" && attempt < times {
				b := bytes.Clone(body)
				b[len(b)/2] ^= 0xff
				return io.NopCloser(bytes.NewReader(b)), nil
			}
			return nil, nil
		}
	}
	for _, digest := range []string{"sha256", "crc64nvme", "crc32c", "md5"} {
		t.Run(digest+"/once: fetched again", func(t *testing.T) {
			dest := t.TempDir()
			if _, err := Fetch(context.Background(), &memSource{m: m, digest: digest, hook: corrupt(1)}, fetchOpts(t, dest)); err != nil {
				t.Fatal(err)
			}
			modeltest.CheckDir(t, dest, m)
		})
		t.Run(digest+"/always: integrity error", func(t *testing.T) {
			dest := t.TempDir()
			_, err := Fetch(context.Background(), &memSource{m: m, digest: digest, hook: corrupt(100)}, fetchOpts(t, dest))
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindIntegrity || e.Kind.ExitCode() != 7 {
				t.Fatalf("err %v; want KindIntegrity", err)
			}
			want := "mem://bucket/model: tokenizer.json: " + digest + " "
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), ", the source says "+sums(m["tokenizer.json"])[digest]) {
				t.Errorf("message %q", err)
			}
			if _, err := os.Stat(filepath.Join(dest, "tokenizer.json")); !os.IsNotExist(err) {
				t.Error("a corrupt file was renamed into place")
			}
			if _, err := os.Stat(filepath.Join(dest, ManifestName)); !os.IsNotExist(err) {
				t.Error("manifest written for a failed load")
			}
		})
	}
}

func TestFetchStallIsRetried(t *testing.T) {
	m := modeltest.Small()
	src := &memSource{m: m, hook: func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		if f.Path == "config.json" && attempt == 0 {
			return &blockingReader{}, nil
		}
		return nil, nil
	}}
	dest := t.TempDir()
	o := fetchOpts(t, dest)
	o.StallTimeout = 100 * time.Millisecond
	if _, err := Fetch(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if src.tries["config.json"] != 2 {
		t.Errorf("config.json opened %d times; want 2 (one stall, one retry)", src.tries["config.json"])
	}
}

// blockingReader never returns data; Close unblocks it, as closing an
// HTTP body does.
type blockingReader struct {
	once, closeOnce sync.Once
	c               chan struct{}
}

func (b *blockingReader) Read([]byte) (int, error) {
	b.once.Do(func() { b.c = make(chan struct{}) })
	<-b.c
	return 0, errors.New("closed")
}

func (b *blockingReader) Close() error {
	b.once.Do(func() { b.c = make(chan struct{}) })
	b.closeOnce.Do(func() { close(b.c) })
	return nil
}

func TestFetchHonoursRetryAfter(t *testing.T) {
	m := modeltest.Small()
	src := &memSource{m: m, hook: func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		if f.Path == "config.json" && attempt < 2 {
			return nil, Retryable(KindNetwork, errors.New("HTTP 429 Too Many Requests"), 7*time.Second)
		}
		return nil, nil
	}}
	o := fetchOpts(t, t.TempDir())
	var mu sync.Mutex
	var waits []time.Duration
	o.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return nil
	}
	if _, err := Fetch(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	if len(waits) != 2 || waits[0] != 7*time.Second || waits[1] != 7*time.Second {
		t.Errorf("waits %v; want two of 7s (the Retry-After)", waits)
	}
}

func TestFetchRetriesRunOut(t *testing.T) {
	m := modeltest.Small()
	src := &memSource{m: m, hook: func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		return nil, Retryable(KindNetwork, errors.New("HTTP 503 Service Unavailable"), 0)
	}}
	o := fetchOpts(t, t.TempDir())
	o.Retries = 3
	_, err := Fetch(context.Background(), src, o)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindNetwork || !strings.Contains(err.Error(), "giving up after 3 retries: HTTP 503 Service Unavailable") {
		t.Fatalf("err %v", err)
	}
}

func TestFetchAuthFailsAtOnce(t *testing.T) {
	m := modeltest.Small()
	src := &memSource{m: m, hook: func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		return nil, Errorf(KindAuth, "GET mem://bucket/model/%s: HTTP 403 Forbidden", f.Path)
	}}
	o := fetchOpts(t, t.TempDir())
	o.Concurrency = 1
	_, err := Fetch(context.Background(), src, o)
	var e *Error
	if !errors.As(err, &e) || e.Kind.ExitCode() != 3 {
		t.Fatalf("err %v; want exit code 3", err)
	}
	if n := src.opens.Load(); n > 2 {
		t.Errorf("%d opens after an auth failure; want no retries", n)
	}
}

func TestFetchFreeSpace(t *testing.T) {
	m := modeltest.Small()
	for _, tc := range []struct {
		name   string
		free   int64
		volume int64
		want   string
	}{
		{"statfs", 1 << 20, 0, "mem://bucket/model: the model needs 3.1 MiB more (6 files) and DEST has 1.0 MiB free; nothing was downloaded"},
		{"sizeLimit", 1 << 40, 2 << 20, "mem://bucket/model: the model needs 3.1 MiB more (6 files) and DEST has 2.0 MiB left of its 2.0 MiB size limit; nothing was downloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &memSource{m: m}
			dest := t.TempDir()
			o := fetchOpts(t, dest)
			o.FreeSpace = func(string) (int64, error) { return tc.free, nil }
			o.VolumeSize = tc.volume
			_, err := Fetch(context.Background(), src, o)
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindDisk {
				t.Fatalf("err %v; want KindDisk", err)
			}
			if got := strings.ReplaceAll(err.Error(), dest, "DEST"); got != tc.want {
				t.Errorf("message\n %s\nwant\n %s", got, tc.want)
			}
			if src.opens.Load() != 0 {
				t.Errorf("%d bytes ranges opened before the space check failed", src.opens.Load())
			}
		})
	}
}

func TestFetchPatterns(t *testing.T) {
	m := modeltest.Small()
	o := fetchOpts(t, t.TempDir())
	o.Allow = []string{"*.safetensors", "*.json"}
	o.Ignore = []string{"tokenizer.*"}
	if _, err := Fetch(context.Background(), &memSource{m: m}, o); err != nil {
		t.Fatal(err)
	}
	want := modeltest.Model{}
	for _, p := range []string{"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		want[p] = m[p]
	}
	modeltest.CheckDir(t, o.Dest, want)

	o = fetchOpts(t, t.TempDir())
	o.Allow = []string{"*.bin"}
	_, err := Fetch(context.Background(), &memSource{m: m}, o)
	if err == nil || err.Error() != "mem://bucket/model: none of its 6 files matches the allow/ignore patterns" {
		t.Errorf("err %v", err)
	}
}

func TestPatternsFollowHuggingFaceHub(t *testing.T) {
	for _, tc := range []struct {
		allow, ignore []string
		name          string
		want          bool
	}{
		{nil, nil, "anything", true},
		{[]string{"*.json"}, nil, "config.json", true},
		{[]string{"*.json"}, nil, "sub/dir/config.json", true}, // "*" matches "/" (fnmatch)
		{[]string{"*.json"}, nil, "config.jsonl", false},
		{[]string{"onnx/"}, nil, "onnx/model.onnx", true}, // a trailing "/" is "onnx/*"
		{[]string{"onnx/"}, nil, "onnx2/model.onnx", false},
		{[]string{"model-0000?-of-*.safetensors"}, nil, "model-00001-of-00002.safetensors", true},
		{[]string{"[!.]*"}, nil, ".gitattributes", false},
		{[]string{"[a-c]*"}, nil, "bert", true},
		{nil, []string{"*.bin", "*.pt"}, "pytorch_model.bin", false},
		{[]string{"*"}, []string{"*.md"}, "README.md", false},
		{[]string{"Config.json"}, nil, "config.json", false}, // case-sensitive
		{[]string{"a+b(c).json"}, nil, "a+b(c).json", true},  // regexp characters are literal
	} {
		p, err := NewPatterns(tc.allow, tc.ignore)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(tc.name); got != tc.want {
			t.Errorf("allow %q ignore %q: Match(%q) = %v, want %v", tc.allow, tc.ignore, tc.name, got, tc.want)
		}
	}
	if _, err := NewPatterns([]string{"[abc"}, nil); err == nil || err.Error() != `file pattern "[abc": unterminated [` {
		t.Errorf("err %v", err)
	}
}

func TestFetchRefusesBadListings(t *testing.T) {
	for _, tc := range []struct {
		files []File
		want  string
	}{
		{nil, "mem://bucket/model: no files at this location"},
		{[]File{{Path: "a", Size: 1}, {Path: "a", Size: 1}}, `mem://bucket/model: two files named "a"`},
		{[]File{{Path: "a", Size: 1}, {Path: "a/b", Size: 1}}, `mem://bucket/model: "a" is both a file and a directory`},
	} {
		o := fetchOpts(t, t.TempDir())
		o.Listing = &Listing{Revision: "r", Files: tc.files}
		_, err := Fetch(context.Background(), &memSource{}, o)
		if err == nil || err.Error() != tc.want {
			t.Errorf("err %v; want %s", err, tc.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"a/b.json":   "a/b.json",
		"a//b":       "a/b",
		"./a":        "a",
		"../x":       `object name "../x" escapes the destination (contains "..")`,
		"a/../../x":  `object name "a/../../x" escapes the destination (contains "..")`,
		"/etc/x":     `object name "/etc/x" is not a relative path`,
		"":           `object name "" is not a relative path`,
		ManifestName: `object name ".mlplane-manifest.json" is reserved`,
	} {
		got, err := CleanPath(in)
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactURI(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:secret@host/p/m.tgz":                          "https://REDACTED@host/p/m.tgz",
		"https://acct.blob.core.windows.net/c/p?sv=2024&sig=SECRET": "https://acct.blob.core.windows.net/c/p?REDACTED",
		"s3://bucket/prefix":                                        "s3://bucket/prefix",
		"hf://org/model@main":                                       "hf://org/model@main",
	} {
		if got := RedactURI(in); got != want {
			t.Errorf("RedactURI(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHTTPErrorKinds(t *testing.T) {
	for code, want := range map[int]Kind{401: KindAuth, 403: KindAuth, 404: KindNotFound, 429: KindNetwork, 503: KindNetwork, 416: KindIntegrity, 400: KindInternal} {
		resp := &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), Header: http.Header{"Retry-After": {"12"}}}
		e := HTTPError(resp, "GET s3://b/k", "")
		if e.Kind != want || e.Retry != (code == 429 || code == 503) {
			t.Errorf("%d: kind %v retry %v", code, e.Kind, e.Retry)
		}
		if e.Retry && e.RetryAfter != 12*time.Second {
			t.Errorf("%d: RetryAfter %v", code, e.RetryAfter)
		}
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	h := http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}
	if d := RetryAfter(h, now); d != 90*time.Second {
		t.Errorf("RetryAfter(date) = %v", d)
	}
}

// TestFetchFileCompletesBeforeOthers: a file is checked and renamed into
// place once its own ranges have landed, not when the whole model has: a
// later file's range is held until the first file is in place.
func TestFetchFileCompletesBeforeOthers(t *testing.T) {
	m := modeltest.New(7, map[string]int{"a.bin": 1000, "b.bin": 1000})
	dest := t.TempDir()
	src := &memSource{m: m, digest: "sha256", hook: func(f File, off, n int64, attempt int, body []byte) (io.ReadCloser, error) {
		if f.Path != "b.bin" {
			return nil, nil
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(dest, "a.bin")); err == nil {
				return nil, nil
			}
			if time.Now().After(deadline) {
				return nil, Errorf(KindInternal, "a.bin is not in place while b.bin is fetched")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}}
	if _, err := Fetch(context.Background(), src, fetchOpts(t, dest)); err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
}
