package hf_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/hf"
	"github.com/mlplane/mlplane/internal/modelload/hf/fakehub"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

const token = "hf_secretTOKEN123"

func startHub(t *testing.T) *fakehub.Server {
	t.Helper()
	s := fakehub.NewServer(fakehub.New())
	t.Cleanup(s.Close)
	return s
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func newSource(t *testing.T, hub *fakehub.Server, uri, tok string) modelload.Source {
	t.Helper()
	return newSourceClient(t, hub, uri, tok, modelload.NewHTTPClient(nil))
}

func newSourceClient(t *testing.T, hub *fakehub.Server, uri, tok string, c *http.Client) modelload.Source {
	t.Helper()
	src, err := hf.New(context.Background(), uri, modelload.SourceOptions{
		Getenv:     env(map[string]string{"HF_ENDPOINT": hub.URL, "HF_TOKEN": tok}),
		HTTPClient: c,
	})
	if err != nil {
		t.Fatalf("New(%q): %v", uri, err)
	}
	return src
}

func byPath(lst *modelload.Listing) map[string]modelload.File {
	m := map[string]modelload.File{}
	for _, f := range lst.Files {
		m[f.Path] = f
	}
	return m
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
		t.Fatalf("reading %s [%d,+%d): %v", f.Path, off, n, err)
	}
	return b
}

func TestParseURI(t *testing.T) {
	for _, c := range []struct{ uri, repo, rev string }{
		{"hf://org/model", "org/model", "main"},
		{"hf://gpt2", "gpt2", "main"},
		{"hf://org/model@v1.0", "org/model", "v1.0"},
		{"hf://Org_1/Model-2.5@refs/pr/1", "Org_1/Model-2.5", "refs/pr/1"},
		{"hf://org/model@0123456789abcdef0123456789abcdef01234567", "org/model", "0123456789abcdef0123456789abcdef01234567"},
	} {
		repo, rev, err := hf.ParseURI(c.uri)
		if err != nil || repo != c.repo || rev != c.rev {
			t.Errorf("ParseURI(%q) = %q, %q, %v; want %q, %q", c.uri, repo, rev, err, c.repo, c.rev)
		}
	}
	for _, uri := range []string{
		"hf://", "hf://org/model/sub", "hf://org/model@", "hf://org//model", "hf://org/mo del",
		"hf://org/../x", "hf://org/a--b", "hf://-org/model", "s3://org/model", "hf://org/model@a?b",
	} {
		_, _, err := hf.ParseURI(uri)
		var me *modelload.Error
		if !errors.As(err, &me) || me.Kind != modelload.KindUsage {
			t.Errorf("ParseURI(%q) = %v; want a KindUsage error", uri, err)
		}
	}
}

func TestRegistered(t *testing.T) {
	src, err := modelload.NewSource(context.Background(), "hf://org/model@v1", modelload.SourceOptions{Getenv: env(nil)})
	if err != nil || src == nil {
		t.Fatalf("NewSource(hf://...) = %v, %v; want the hf source", src, err)
	}
}

// TestListRevisions lists a branch, a tag and an explicit commit sha of a
// repository with two commits.
func TestListRevisions(t *testing.T) {
	hub := startHub(t)
	v1 := modeltest.Small()
	v2 := modeltest.New(2, map[string]int{"config.json": 600, "model.safetensors": 3 << 20})
	sha1 := hub.MustAdd("org/model", fakehub.Repo{Files: v1, Refs: []string{"main", "v1.0"}})
	sha2 := hub.MustAdd("org/model", fakehub.Repo{Files: v2})
	if sha1 == sha2 || len(sha1) != 40 {
		t.Fatalf("commit shas %q, %q", sha1, sha2)
	}
	for _, c := range []struct {
		rev, sha string
		want     modeltest.Model
	}{
		{"", sha2, v2},
		{"@main", sha2, v2},
		{"@v1.0", sha1, v1},
		{"@" + sha1, sha1, v1},
	} {
		src := newSource(t, hub, "hf://org/model"+c.rev, "")
		lst, err := src.List(context.Background())
		if err != nil {
			t.Fatalf("List(%s): %v", c.rev, err)
		}
		if lst.Revision != c.sha {
			t.Errorf("List(%s).Revision = %s, want %s", c.rev, lst.Revision, c.sha)
		}
		if lst.Archive {
			t.Errorf("List(%s).Archive = true", c.rev)
		}
		files := byPath(lst)
		if len(files) != len(c.want) {
			t.Errorf("List(%s): %d files, want %d", c.rev, len(files), len(c.want))
		}
		for p, b := range c.want {
			f, ok := files[p]
			if !ok {
				t.Errorf("List(%s): %s missing", c.rev, p)
				continue
			}
			if f.Size != int64(len(b)) {
				t.Errorf("%s: Size %d, want %d", p, f.Size, len(b))
			}
			wantSHA := ""
			if len(b) >= fakehub.DefaultLFSThreshold {
				wantSHA = modeltest.SHA256(b)
			}
			if f.SHA256 != wantSHA {
				t.Errorf("%s: SHA256 %q, want %q (LFS files only)", p, f.SHA256, wantSHA)
			}
			if len(f.Version) != 40 || f.Key != c.sha {
				t.Errorf("%s: Version %q (want a blob id), Key %q (want %s)", p, f.Version, f.Key, c.sha)
			}
		}
	}
}

func TestListEscapesRevision(t *testing.T) {
	hub := startHub(t)
	sha := hub.MustAdd("gpt2", fakehub.Repo{Files: modeltest.Small(), Refs: []string{"refs/pr/1"}})
	hub.MustAdd("gpt2", fakehub.Repo{Files: modeltest.New(3, map[string]int{"a": 1})})
	lst, err := newSource(t, hub, "hf://gpt2@refs/pr/1", "").List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if lst.Revision != sha {
		t.Errorf("Revision %s, want %s", lst.Revision, sha)
	}
	reqs := hub.Requests()
	if want := "/api/models/gpt2/revision/refs%2Fpr%2F1"; len(reqs) == 0 || reqs[0].Path != want {
		t.Errorf("requests %+v; want the first for %s", reqs, want)
	}
}

// TestListSizesByHEAD lists from a hub that ignores blobs=true: sizes and
// LFS digests come from HEAD requests that stop at the CDN redirect.
func TestListSizesByHEAD(t *testing.T) {
	hub := startHub(t)
	hub.NoBlobs = true
	m := modeltest.Small()
	hub.MustAdd("org/model", fakehub.Repo{Files: m})
	lst, err := newSource(t, hub, "hf://org/model", "").List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	files := byPath(lst)
	for p, b := range m {
		if files[p].Size != int64(len(b)) {
			t.Errorf("%s: Size %d, want %d", p, files[p].Size, len(b))
		}
	}
	big := "model-00001-of-00002.safetensors"
	if files[big].SHA256 != modeltest.SHA256(m[big]) {
		t.Errorf("%s: SHA256 %q from X-Linked-Etag, want %s", big, files[big].SHA256, modeltest.SHA256(m[big]))
	}
	heads := 0
	for _, r := range hub.Requests() {
		if r.Server == "cdn" {
			t.Errorf("the CDN was asked %s %s while listing", r.Method, r.Path)
		}
		if r.Method == http.MethodHead {
			heads++
		}
	}
	if heads != len(m) {
		t.Errorf("%d HEAD requests, want %d", heads, len(m))
	}
}

// TestOpenRanges reads ranges of an LFS file (through the CDN redirect)
// and of a regular file (from the hub).
func TestOpenRanges(t *testing.T) {
	hub := startHub(t)
	m := modeltest.Small()
	hub.MustAdd("org/model", fakehub.Repo{Files: m})
	src := newSource(t, hub, "hf://org/model", "")
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	files := byPath(lst)
	for _, p := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "onnx/model.onnx"} {
		b := m[p]
		sz := int64(len(b))
		for _, r := range [][2]int64{{0, sz}, {0, 1}, {1, 1000}, {sz / 2, -1}, {sz - 13, 13}, {0, -1}, {5, 0}} {
			got := readRange(t, src, files[p], r[0], r[1])
			end := sz
			if r[1] >= 0 {
				end = r[0] + r[1]
			}
			if !bytes.Equal(got, b[r[0]:end]) {
				t.Errorf("%s [%d,+%d): %d bytes that differ from the model's", p, r[0], r[1], len(got))
			}
		}
	}
	if got := readRange(t, src, files["README.md"], 0, -1); len(got) != 0 {
		t.Errorf("README.md: %d bytes, want 0", len(got))
	}
	var cdnRanges []string
	for _, r := range hub.Requests() {
		if r.Server == "cdn" {
			cdnRanges = append(cdnRanges, r.Range)
		}
	}
	if len(cdnRanges) == 0 || cdnRanges[0] != "bytes=0-2097164" {
		t.Errorf("CDN ranges %q; want the first to be bytes=0-2097164", cdnRanges)
	}
}

// TestOpenUsesListedCommit: a branch that moves after List does not change
// what Open reads.
func TestOpenUsesListedCommit(t *testing.T) {
	hub := startHub(t)
	v1 := modeltest.New(1, map[string]int{"w.bin": 2 << 20, "c.json": 100})
	hub.MustAdd("org/model", fakehub.Repo{Files: v1})
	src := newSource(t, hub, "hf://org/model", "")
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hub.MustAdd("org/model", fakehub.Repo{Files: modeltest.New(9, map[string]int{"w.bin": 2 << 20, "c.json": 100})})
	for _, f := range lst.Files {
		if got := readRange(t, src, f, 0, -1); !bytes.Equal(got, v1[f.Path]) {
			t.Errorf("%s: read the new commit's content, want the listed one's", f.Path)
		}
	}
}

// TestTokenNeverReachesCDN: the token goes to the hub on every request and
// never to the CDN; with Go's default redirect policy (which forwards
// Authorization to the same host name on another port) it would.
func TestTokenNeverReachesCDN(t *testing.T) {
	hub := startHub(t)
	m := modeltest.Small()
	hub.MustAdd("org/private", fakehub.Repo{Files: m, Private: true, Tokens: []string{token}})
	src := newSource(t, hub, "hf://org/private", token)
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range lst.Files {
		if got := readRange(t, src, f, 0, -1); !bytes.Equal(got, m[f.Path]) {
			t.Errorf("%s differs", f.Path)
		}
	}
	cdn := 0
	for _, r := range hub.Requests() {
		switch r.Server {
		case "hub":
			if r.Authorization != "Bearer "+token {
				t.Errorf("hub %s %s: Authorization %q, want the token", r.Method, r.Path, r.Authorization)
			}
		case "cdn":
			cdn++
		}
	}
	if cdn == 0 {
		t.Fatal("no request reached the CDN")
	}
	if a := hub.CDNAuthorizations(); len(a) != 0 {
		t.Errorf("the CDN received Authorization %q", a)
	}

	// The control: a client without the shared redirect policy leaks it.
	hub.ResetRequests()
	leaky := newSourceClient(t, hub, "hf://org/private", token, &http.Client{})
	big := byPath(lst)["model-00001-of-00002.safetensors"]
	readRange(t, leaky, big, 0, 10)
	if a := hub.CDNAuthorizations(); len(a) == 0 {
		t.Errorf("control: Go's default client did not forward Authorization to the CDN; the check above proves nothing")
	}
}

func TestRenamedRepository(t *testing.T) {
	hub := startHub(t)
	m := modeltest.Small()
	hub.MustAdd("neworg/model", fakehub.Repo{Files: m, Private: true, Tokens: []string{token}})
	hub.Rename("oldorg/model", "neworg/model")
	src := newSource(t, hub, "hf://oldorg/model", token)
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range lst.Files {
		if f.Size == 0 {
			continue
		}
		if got := readRange(t, src, f, 1, -1); !bytes.Equal(got, m[f.Path][1:]) {
			t.Errorf("%s differs", f.Path)
		}
	}
	if a := hub.CDNAuthorizations(); len(a) != 0 {
		t.Errorf("the CDN received Authorization %q", a)
	}
}

func kindOf(err error) modelload.Kind {
	var me *modelload.Error
	if !errors.As(err, &me) {
		return -1
	}
	return me.Kind
}

// TestErrors checks the messages and kinds of the hub's refusals, and that
// no message holds the token.
func TestErrors(t *testing.T) {
	hub := startHub(t)
	m := modeltest.New(4, map[string]int{"config.json": 10, "model.safetensors": 2 << 20})
	hub.MustAdd("org/private", fakehub.Repo{Files: m, Private: true, Tokens: []string{token}})
	hub.MustAdd("org/gated", fakehub.Repo{Files: m, Gated: true, Tokens: []string{token}})
	hub.MustAdd("org/public", fakehub.Repo{Files: m})
	hub.AddToken("hf_otherTOKEN")
	ep := hub.URL
	for _, c := range []struct {
		uri, tok string
		kind     modelload.Kind
		msg      string
	}{
		{"hf://org/private", "", modelload.KindAuth,
			"hf://org/private: repository not found, or it is private or gated: set HF_TOKEN to a token with access (HTTP 401: Repository not found)"},
		{"hf://org/missing", "", modelload.KindAuth,
			"hf://org/missing: repository not found, or it is private or gated: set HF_TOKEN to a token with access (HTTP 401: Repository not found)"},
		{"hf://org/private", "hf_otherTOKEN", modelload.KindNotFound,
			"hf://org/private: repository not found, or the token in HF_TOKEN has no access to it (HTTP 404)"},
		{"hf://org/missing", token, modelload.KindNotFound,
			"hf://org/missing: repository not found, or the token in HF_TOKEN has no access to it (HTTP 404)"},
		{"hf://org/public", "hf_badTOKEN", modelload.KindAuth,
			"hf://org/public: the token in HF_TOKEN was refused: it is invalid or expired, or has no access to this repository (HTTP 401: Invalid credentials in Authorization header)"},
		{"hf://org/gated", "", modelload.KindAuth,
			"hf://org/gated is a gated repository: set HF_TOKEN to a token of an account that was granted access on " + ep + "/org/gated (HTTP 401: Access to model org/gated is restricted. You must have access to it and be authenticated to access it. Please log in.)"},
		{"hf://org/gated", "hf_otherTOKEN", modelload.KindAuth,
			"hf://org/gated is a gated repository and the account of HF_TOKEN was not granted access: request it on " + ep + "/org/gated (HTTP 403: Access to model org/gated is restricted and you are not in the authorized list. Visit https://huggingface.co/org/gated to ask for access.)"},
		{"hf://org/public@nope", "", modelload.KindNotFound,
			`hf://org/public: revision "nope" not found: no such branch, tag or commit (HTTP 404)`},
	} {
		_, err := newSource(t, hub, c.uri, c.tok).List(context.Background())
		if err == nil {
			t.Errorf("List(%s, token %q) succeeded", c.uri, c.tok)
			continue
		}
		if err.Error() != c.msg || kindOf(err) != c.kind {
			t.Errorf("List(%s, token %q):\n got %v: %q\nwant %v: %q", c.uri, c.tok, kindOf(err), err, c.kind, c.msg)
		}
		if c.tok != "" && strings.Contains(err.Error(), c.tok) {
			t.Errorf("the error holds the token: %v", err)
		}
	}

	// The gated repository with a granted token loads.
	if _, err := newSource(t, hub, "hf://org/gated", token).List(context.Background()); err != nil {
		t.Errorf("gated with access: %v", err)
	}
	// A file that is not in the commit.
	src := newSource(t, hub, "hf://org/public", "")
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Open(context.Background(), modelload.File{Path: "nope.bin", Size: 1, Key: lst.Revision}, 0, 1)
	want := `hf://org/public: file "nope.bin" not found at revision ` + lst.Revision + " (HTTP 404)"
	if err == nil || err.Error() != want || kindOf(err) != modelload.KindNotFound {
		t.Errorf("Open(missing file) = %v (kind %v); want KindNotFound %q", err, kindOf(err), want)
	}
}

func TestRetryAfter(t *testing.T) {
	hub := startHub(t)
	hub.MustAdd("org/model", fakehub.Repo{Files: modeltest.Small()})
	src := newSource(t, hub, "hf://org/model", "")
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hub.SetFault(fakehub.FailFirst(1, fakehub.Fault{Status: http.StatusTooManyRequests, RetryAfter: "7"}, nil))
	f := byPath(lst)["config.json"]
	_, err = src.Open(context.Background(), f, 0, -1)
	var me *modelload.Error
	if !errors.As(err, &me) || !me.Retry || me.RetryAfter != 7*time.Second || me.Kind != modelload.KindNetwork {
		t.Fatalf("Open under a 429 = %#v; want a retryable KindNetwork error after 7s", err)
	}
	if !strings.Contains(err.Error(), "HTTP 429") {
		t.Errorf("message %q does not name the status", err)
	}
	if got := readRange(t, src, f, 0, -1); len(got) != 517 {
		t.Errorf("after the fault: %d bytes, want 517", len(got))
	}
}

func TestCutConnectionIsRetryable(t *testing.T) {
	hub := startHub(t)
	hub.MustAdd("org/model", fakehub.Repo{Files: modeltest.Small()})
	src := newSource(t, hub, "hf://org/model", "")
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hub.SetFault(fakehub.FailFirst(1, fakehub.Fault{After: 1000, Cut: true}, func(r fakehub.Request) bool { return r.Server == "cdn" }))
	rc, err := src.Open(context.Background(), byPath(lst)["model-00001-of-00002.safetensors"], 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err == nil || n != 1000 {
		t.Fatalf("read %d bytes, err %v; want 1000 and a cut", n, err)
	}
	if ce := modelload.Classify(err); !ce.Retry || ce.Kind != modelload.KindNetwork {
		t.Errorf("Classify(%v) = %+v; want retryable KindNetwork", err, ce)
	}
}

func TestExpiredCDNLinkIsRetryable(t *testing.T) {
	hub := startHub(t)
	hub.LinkTTL = -time.Minute
	hub.MustAdd("org/model", fakehub.Repo{Files: modeltest.Small()})
	src := newSource(t, hub, "hf://org/model", "")
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Open(context.Background(), byPath(lst)["model-00001-of-00002.safetensors"], 0, 10)
	var me *modelload.Error
	if !errors.As(err, &me) || !me.Retry || me.Kind != modelload.KindNetwork {
		t.Fatalf("Open with an expired link = %v; want a retryable KindNetwork error", err)
	}
	want := "GET hf://org/model/model-00001-of-00002.safetensors: the CDN refused the download link (HTTP 403; expired?); it is resolved anew on retry"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestEnvironment(t *testing.T) {
	hub := startHub(t)
	hub.MustAdd("org/private", fakehub.Repo{Files: modeltest.Small(), Private: true, Tokens: []string{token}})
	// The legacy variable is read when HF_TOKEN is unset.
	src, err := hf.New(context.Background(), "hf://org/private", modelload.SourceOptions{
		Getenv: env(map[string]string{"HF_ENDPOINT": hub.URL + "/", "HUGGING_FACE_HUB_TOKEN": token}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.List(context.Background()); err != nil {
		t.Errorf("with HUGGING_FACE_HUB_TOKEN: %v", err)
	}
	// HF_TOKEN wins over it.
	src, _ = hf.New(context.Background(), "hf://org/private", modelload.SourceOptions{
		Getenv: env(map[string]string{"HF_ENDPOINT": hub.URL, "HF_TOKEN": "hf_wrong", "HUGGING_FACE_HUB_TOKEN": token}),
	})
	if _, err := src.List(context.Background()); kindOf(err) != modelload.KindAuth {
		t.Errorf("HF_TOKEN wrong, legacy right: %v; want KindAuth (HF_TOKEN is used)", err)
	}
	for _, c := range []struct{ ep, msg string }{
		{"http://hub.example.com", "HF_ENDPOINT http://hub.example.com is plain http: refusing to send HF_TOKEN over it; use https"},
		{"ftp://hub.example.com", `HF_ENDPOINT "ftp://hub.example.com": want an http(s) URL such as https://huggingface.co`},
	} {
		_, err := hf.New(context.Background(), "hf://org/m", modelload.SourceOptions{Getenv: env(map[string]string{"HF_ENDPOINT": c.ep, "HF_TOKEN": token})})
		if err == nil || err.Error() != c.msg || kindOf(err) != modelload.KindUsage {
			t.Errorf("HF_ENDPOINT %s: %v; want KindUsage %q", c.ep, err, c.msg)
		}
	}
}

// TestDiskRepository serves a repository from files on disk.
func TestDiskRepository(t *testing.T) {
	dir := t.TempDir()
	m := modeltest.New(5, map[string]int{"big.safetensors": 3<<20 + 1, "sub/small.json": 99})
	for p, b := range m {
		fp := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hub := startHub(t)
	hub.MustAdd("org/disk", fakehub.Repo{Dir: dir})
	src := newSource(t, hub, "hf://org/disk", "")
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	files := byPath(lst)
	for p, b := range m {
		if got := readRange(t, src, files[p], 7, -1); !bytes.Equal(got, b[7:]) {
			t.Errorf("%s differs", p)
		}
	}
	if files["big.safetensors"].SHA256 != modeltest.SHA256(m["big.safetensors"]) {
		t.Errorf("big.safetensors: SHA256 %q", files["big.safetensors"].SHA256)
	}
}
