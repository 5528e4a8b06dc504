package httpsrc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/httpsrc"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// fileServer serves one file with configurable HTTP manners and records
// what it was asked.
type fileServer struct {
	mu               sync.Mutex
	data             []byte
	etag             string
	lastModified     time.Time
	noRanges         bool // ignore Range, answer 200 with everything
	hideAcceptRanges bool // serve ranges but never say Accept-Ranges
	refuseHEAD       int  // answer HEAD with this status
	status           int  // answer everything with this status
	reqs             []seen
}

type seen struct{ method, rng, ifMatch string }

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, seen{r.Method, r.Header.Get("Range"), r.Header.Get("If-Match")})
	data, etag, lm := s.data, s.etag, s.lastModified
	s.mu.Unlock()
	if s.status != 0 {
		http.Error(w, "no", s.status)
		return
	}
	if r.Method == http.MethodHead && s.refuseHEAD != 0 {
		http.Error(w, "SignatureDoesNotMatch", s.refuseHEAD)
		return
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if s.noRanges {
		if !lm.IsZero() {
			w.Header().Set("Last-Modified", lm.UTC().Format(http.TimeFormat))
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method != http.MethodHead {
			w.Write(data)
		}
		return
	}
	if s.hideAcceptRanges {
		w = hideAR{w}
	}
	http.ServeContent(w, r, "", lm, bytes.NewReader(data))
}

type hideAR struct{ http.ResponseWriter }

func (h hideAR) WriteHeader(code int) {
	h.Header().Del("Accept-Ranges")
	h.ResponseWriter.WriteHeader(code)
}

func (h hideAR) Write(p []byte) (int, error) {
	h.Header().Del("Accept-Ranges")
	return h.ResponseWriter.Write(p)
}

func (s *fileServer) seen() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

func serve(t *testing.T, fs *fileServer) string {
	t.Helper()
	srv := httptest.NewServer(fs)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newSource(t *testing.T, uri string) modelload.Source {
	t.Helper()
	src, err := httpsrc.New(context.Background(), uri, modelload.SourceOptions{})
	if err != nil {
		t.Fatalf("New(%s): %v", uri, err)
	}
	return src
}

func list(t *testing.T, src modelload.Source) (*modelload.Listing, modelload.File) {
	t.Helper()
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(lst.Files) != 1 {
		t.Fatalf("List: %d files, want 1", len(lst.Files))
	}
	return lst, lst.Files[0]
}

func read(t *testing.T, src modelload.Source, f modelload.File, off, n int64) []byte {
	t.Helper()
	rc, err := src.Open(context.Background(), f, off, n)
	if err != nil {
		t.Fatalf("Open(%d, %d): %v", off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading [%d,+%d): %v", off, n, err)
	}
	return b
}

func kindOf(err error) modelload.Kind {
	var me *modelload.Error
	if !errors.As(err, &me) {
		return -1
	}
	return me.Kind
}

var content = modeltest.New(7, map[string]int{"f": 300_001})["f"]

func TestListAndOpenRanges(t *testing.T) {
	fs := &fileServer{data: content, etag: `"abc123"`}
	base := serve(t, fs)
	src := newSource(t, base+"/models/llama/model.safetensors?X-Sig=s3cr3t")
	lst, f := list(t, src)
	if f.Path != "model.safetensors" || f.Size != int64(len(content)) || f.Version != `"abc123"` || lst.Revision != "abc123" || lst.Archive {
		t.Errorf("List = %+v, file %+v; want model.safetensors, %d bytes, version \"abc123\", revision abc123, no archive", lst, f, len(content))
	}
	sz := int64(len(content))
	for _, r := range [][2]int64{{0, sz}, {0, -1}, {0, 1}, {100, 1000}, {sz - 1, 1}, {sz / 3, -1}, {9, 0}} {
		end := sz
		if r[1] >= 0 {
			end = r[0] + r[1]
		}
		if got := read(t, src, f, r[0], r[1]); !bytes.Equal(got, content[r[0]:end]) {
			t.Errorf("[%d,+%d): %d bytes that differ", r[0], r[1], len(got))
		}
	}
	var gets int
	for _, s := range fs.seen() {
		if s.method == http.MethodGet {
			gets++
			if s.ifMatch != `"abc123"` {
				t.Errorf("GET %s: If-Match %q, want the ETag", s.rng, s.ifMatch)
			}
		}
	}
	if gets != 6 {
		t.Errorf("%d GETs, want 6 (none for an empty range)", gets)
	}
}

// TestChangedFile: a file that changes after List fails with
// KindIntegrity (If-Match → 412), not with mixed content.
func TestChangedFile(t *testing.T) {
	fs := &fileServer{data: content, etag: `"v1"`}
	base := serve(t, fs)
	src := newSource(t, base+"/m.bin?sig=abc")
	_, f := list(t, src)
	fs.mu.Lock()
	fs.data, fs.etag = bytes.Repeat([]byte("x"), len(content)), `"v2"`
	fs.mu.Unlock()
	_, err := src.Open(context.Background(), f, 10, 10)
	want := "GET " + base + `/m.bin?REDACTED: the file changed at the source during the download (its ETag is no longer "v1")`
	if err == nil || err.Error() != want || kindOf(err) != modelload.KindIntegrity {
		t.Errorf("Open after a change = %v (kind %v); want KindIntegrity %q", err, kindOf(err), want)
	}
}

// TestHEADRefused: a URL signed for GET only refuses HEAD; a one-byte GET
// finds the size and range support.
func TestHEADRefused(t *testing.T) {
	fs := &fileServer{data: content, etag: `"e"`, refuseHEAD: http.StatusForbidden}
	src := newSource(t, serve(t, fs)+"/m.bin?sig=x")
	_, f := list(t, src)
	if f.Size != int64(len(content)) {
		t.Errorf("Size %d, want %d", f.Size, len(content))
	}
	s := fs.seen()
	if len(s) != 2 || s[0].method != http.MethodHead || s[1].method != http.MethodGet || s[1].rng != "bytes=0-0" {
		t.Errorf("requests %+v; want HEAD then GET bytes=0-0", s)
	}
	if got := read(t, src, f, 5, 5); !bytes.Equal(got, content[5:10]) {
		t.Errorf("range differs")
	}
}

// TestNoRanges: a server that ignores Range lists with Size -1 (one
// stream); Open at offset 0 works, at another offset fails clearly.
func TestNoRanges(t *testing.T) {
	fs := &fileServer{data: content, noRanges: true, lastModified: time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)}
	base := serve(t, fs)
	src := newSource(t, base+"/m.bin")
	lst, f := list(t, src)
	if f.Size != -1 {
		t.Errorf("Size %d, want -1 (fetch in one stream)", f.Size)
	}
	if lst.Revision != "2024-03-04T05:06:07Z" {
		t.Errorf("Revision %q, want the Last-Modified date", lst.Revision)
	}
	if got := read(t, src, f, 0, -1); !bytes.Equal(got, content) {
		t.Errorf("whole file differs")
	}
	if got := read(t, src, f, 0, 10); !bytes.Equal(got, content[:10]) {
		t.Errorf("first 10 bytes differ")
	}
	_, err := src.Open(context.Background(), f, 10, 5)
	want := "GET " + base + "/m.bin: the server ignored the Range request for bytes 10- (HTTP 200): it does not serve ranges, so the file can only be fetched in one stream from the start"
	if err == nil || err.Error() != want || kindOf(err) != modelload.KindNetwork {
		t.Errorf("Open(10, 5) = %v; want %q", err, want)
	}
}

// TestNoAcceptRanges: ranges that work without Accept-Ranges are found by
// a one-byte GET.
func TestNoAcceptRanges(t *testing.T) {
	fs := &fileServer{data: content, hideAcceptRanges: true}
	src := newSource(t, serve(t, fs)+"/m.bin")
	lst, f := list(t, src)
	if f.Size != int64(len(content)) {
		t.Errorf("Size %d, want %d", f.Size, len(content))
	}
	if s := fs.seen(); len(s) != 2 || s[1].rng != "bytes=0-0" {
		t.Errorf("requests %+v; want HEAD then GET bytes=0-0", s)
	}
	if !strings.HasPrefix(lst.Revision, "sha256:") {
		t.Errorf("Revision %q; want a digest of the URL (no ETag, no Last-Modified)", lst.Revision)
	}
}

func TestRevisionOfURL(t *testing.T) {
	fs := &fileServer{data: content}
	u := serve(t, fs) + "/m.bin?v=1"
	lst, _ := list(t, newSource(t, u))
	sum := sha256.Sum256([]byte(u))
	if want := "sha256:" + hex.EncodeToString(sum[:]); lst.Revision != want {
		t.Errorf("Revision %q, want %q", lst.Revision, want)
	}
}

func TestEmptyFile(t *testing.T) {
	fs := &fileServer{data: []byte{}, refuseHEAD: http.StatusMethodNotAllowed, etag: `"empty"`}
	src := newSource(t, serve(t, fs)+"/empty.bin")
	_, f := list(t, src)
	if f.Size != 0 {
		t.Errorf("Size %d, want 0", f.Size)
	}
}

func TestArchive(t *testing.T) {
	for name, want := range map[string]bool{
		"m.tar": true, "m.tar.gz": true, "M.TGZ": true, "m.zip": true,
		"m.gz": false, "m.safetensors": false, "tar": false, "m.tar.zst": false,
	} {
		if got := httpsrc.IsArchive(name); got != want {
			t.Errorf("IsArchive(%q) = %v, want %v", name, got, want)
		}
	}
	fs := &fileServer{data: content, etag: `"e"`}
	lst, f := list(t, newSource(t, serve(t, fs)+"/dl/model%20v2.tar.gz"))
	if !lst.Archive || f.Path != "model v2.tar.gz" {
		t.Errorf("List = %+v, file %q; want an archive named \"model v2.tar.gz\"", lst, f.Path)
	}
}

func TestNewRefuses(t *testing.T) {
	for uri, want := range map[string]string{
		"http://models.example.com/m.bin":       `model URI "http://models.example.com/m.bin": plain http is refused for a host that is not loopback (the model could be altered in transit); use https://`,
		"https://models.example.com/":           `model URI "https://models.example.com/": the URL path names no file (want https://HOST/PATH/NAME)`,
		"https://models.example.com":            `model URI "https://models.example.com": the URL path names no file (want https://HOST/PATH/NAME)`,
		"https://models.example.com/d/?sig=abc": `model URI "https://models.example.com/d/?REDACTED": the URL path names no file (want https://HOST/PATH/NAME)`,
	} {
		_, err := httpsrc.New(context.Background(), uri, modelload.SourceOptions{})
		if err == nil || err.Error() != want || kindOf(err) != modelload.KindUsage {
			t.Errorf("New(%s) = %v; want KindUsage %q", uri, err, want)
		}
	}
	for _, uri := range []string{"http://127.0.0.1:8080/m.bin", "http://localhost/m.bin", "http://[::1]:9/m.bin", "https://models.example.com/a/m.bin?x=y"} {
		if _, err := httpsrc.New(context.Background(), uri, modelload.SourceOptions{}); err != nil {
			t.Errorf("New(%s): %v", uri, err)
		}
	}
	for _, uri := range []string{"https://h.example.com/m.bin", "http://127.0.0.1/m.bin"} {
		if src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{}); err != nil || src == nil {
			t.Errorf("NewSource(%s) = %v; want the https source", uri, err)
		}
	}
}

// TestErrors: statuses map to kinds, and the URL's query (a signature)
// never appears in a message.
func TestErrors(t *testing.T) {
	for status, kind := range map[int]modelload.Kind{
		http.StatusNotFound:            modelload.KindNotFound,
		http.StatusUnauthorized:        modelload.KindAuth,
		http.StatusForbidden:           modelload.KindAuth,
		http.StatusServiceUnavailable:  modelload.KindNetwork,
		http.StatusTooManyRequests:     modelload.KindNetwork,
		http.StatusInternalServerError: modelload.KindNetwork,
	} {
		fs := &fileServer{status: status}
		base := serve(t, fs)
		_, err := newSource(t, base+"/m.bin?sig=TOPSECRET").List(context.Background())
		if kindOf(err) != kind {
			t.Errorf("HTTP %d: %v (kind %v), want kind %v", status, err, kindOf(err), kind)
		}
		if err != nil && strings.Contains(err.Error(), "TOPSECRET") {
			t.Errorf("HTTP %d: the message holds the signature: %v", status, err)
		}
	}
	_, err := newSource(t, "http://127.0.0.1:1/m.bin?sig=TOPSECRET").List(context.Background())
	var me *modelload.Error
	if !errors.As(err, &me) || !me.Retry || me.Kind != modelload.KindNetwork || strings.Contains(err.Error(), "TOPSECRET") {
		t.Errorf("refused connection: %v; want a retryable KindNetwork error without the query", err)
	}
}
