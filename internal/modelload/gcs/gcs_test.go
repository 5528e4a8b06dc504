package gcs

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

func TestMain(m *testing.M) {
	// The real finder probes the GCE metadata server's address; no test may
	// leave loopback.
	findDefault = func(context.Context, google.CredentialsParams) (*google.Credentials, error) {
		return nil, errors.New("no default credentials in tests")
	}
	os.Exit(m.Run())
}

// fakeGCS is fake-gcs-server (the GCS JSON API, in memory) listening on
// loopback, with a second loopback front end on the same handler that
// records requests.
type fakeGCS struct {
	srv   *fakestorage.Server
	front *httptest.Server

	mu   sync.Mutex
	reqs []*http.Request
}

func newFakeGCS(t *testing.T, objs ...fakestorage.Object) *fakeGCS {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		InitialObjects: objs, Scheme: "http", Host: "127.0.0.1", NoListener: false,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	f := &fakeGCS{srv: srv}
	h := srv.HTTPHandler()
	f.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.front.Close)
	return f
}

func (f *fakeGCS) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

func obj(bucket, name string, b []byte) fakestorage.Object {
	return fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name}, Content: b}
}

// smallInBucket serves modeltest.Small() under models/llama/, with folder
// placeholders and neighbours that must not be listed.
func smallInBucket(t *testing.T) (*fakeGCS, modeltest.Model) {
	m := modeltest.Small()
	var objs []fakestorage.Object
	for p, b := range m {
		objs = append(objs, obj("models", "llama/"+p, b))
	}
	objs = append(objs,
		obj("models", "llama/", nil),
		obj("models", "llama/onnx/", nil),
		obj("models", "llama-v2/config.json", []byte("{}")),
		obj("models", "llama.txt", []byte("not a model")),
	)
	return newFakeGCS(t, objs...), m
}

func newSource(t *testing.T, uri string, e env) *Source {
	t.Helper()
	src, err := New(context.Background(), uri, modelload.SourceOptions{Getenv: e.get})
	if err != nil {
		t.Fatalf("New(%s): %v", uri, err)
	}
	return src.(*Source)
}

type env map[string]string

func (e env) get(k string) string { return e[k] }

func emulator(u string) env { return env{"STORAGE_EMULATOR_HOST": u} }

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
	f, m := smallInBucket(t)
	for _, uri := range []string{"gs://models/llama", "gs://models/llama/"} {
		t.Run(uri, func(t *testing.T) {
			src := newSource(t, uri, emulator(f.srv.URL()))
			src.pageSize = 2 // several pages
			l, err := src.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, fl := range l.Files {
				got = append(got, fl.Path)
				want := m[fl.Path]
				if fl.Size != int64(len(want)) {
					t.Errorf("%s: size %d, want %d", fl.Path, fl.Size, len(want))
				}
				sum := md5.Sum(want)
				if fl.MD5 != hex.EncodeToString(sum[:]) {
					t.Errorf("%s: MD5 %q, want %x", fl.Path, fl.MD5, sum)
				}
				if fl.Key != "llama/"+fl.Path || fl.Version == "" {
					t.Errorf("%s: key %q generation %q", fl.Path, fl.Key, fl.Version)
				}
			}
			if strings.Join(got, ",") != strings.Join(m.Paths(), ",") {
				t.Fatalf("paths %v, want %v", got, m.Paths())
			}
			if !strings.HasPrefix(l.Revision, "sha256:") || len(l.Revision) != len("sha256:")+64 {
				t.Errorf("revision %q", l.Revision)
			}
			for _, fl := range l.Files {
				want := m[fl.Path]
				var buf []byte
				const chunk = 1<<20 - 3
				for off := int64(0); off < fl.Size; off += chunk {
					buf = append(buf, readRange(t, src, fl, off, min(chunk, fl.Size-off))...)
				}
				if !bytes.Equal(buf, want) {
					t.Errorf("%s: ranged reads differ (%d bytes, want %d)", fl.Path, len(buf), len(want))
				}
				if b := readRange(t, src, fl, 0, -1); !bytes.Equal(b, want) {
					t.Errorf("%s: whole read differs", fl.Path)
				}
				if fl.Size > 10 {
					if b := readRange(t, src, fl, 10, -1); !bytes.Equal(b, want[10:]) {
						t.Errorf("%s: tail read differs", fl.Path)
					}
				}
			}
		})
	}
}

// TestRequests checks the wire format: the listing's prefix and pages,
// the download URL with the object name escaped as one path segment, the
// generation and the Range header.
func TestRequests(t *testing.T) {
	f, m := smallInBucket(t)
	src := newSource(t, "gs://models/llama", emulator(f.front.URL))
	src.pageSize = 2
	l, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var lists int
	for _, r := range f.requests() {
		if r.URL.Path == "/storage/v1/b/models/o" {
			lists++
			if q := r.URL.Query(); q.Get("prefix") != "llama/" || q.Get("maxResults") != "2" || !strings.Contains(q.Get("fields"), "nextPageToken") {
				t.Errorf("list query %q", r.URL.RawQuery)
			}
		}
	}
	if lists < 3 { // 10 objects under llama/ (placeholders included) in pages of 2
		t.Errorf("%d list requests, want pages", lists)
	}
	var onnx modelload.File
	for _, fl := range l.Files {
		if fl.Path == "onnx/model.onnx" {
			onnx = fl
		}
	}
	if b := readRange(t, src, onnx, 5, 7); !bytes.Equal(b, m["onnx/model.onnx"][5:12]) {
		t.Errorf("range differs")
	}
	reqs := f.requests()
	last := reqs[len(reqs)-1]
	if last.URL.EscapedPath() != "/download/storage/v1/b/models/o/llama%2Fonnx%2Fmodel.onnx" ||
		last.URL.Query().Get("alt") != "media" || last.URL.Query().Get("generation") != onnx.Version ||
		last.Header.Get("Range") != "bytes=5-11" {
		t.Errorf("GET %s Range %q", last.URL.String(), last.Header.Get("Range"))
	}
	if last.Header.Get("Authorization") != "" {
		t.Errorf("emulator request carries Authorization")
	}
}

func TestSingleObjectPrefix(t *testing.T) {
	f, m := smallInBucket(t)
	src := newSource(t, "gs://models/llama/onnx/model.onnx", emulator(f.srv.URL()))
	l, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 1 || l.Files[0].Path != "model.onnx" || l.Files[0].Key != "llama/onnx/model.onnx" {
		t.Fatalf("files %+v, want the one file model.onnx", l.Files)
	}
	want := m["onnx/model.onnx"]
	if b := readRange(t, src, l.Files[0], 100, 1000); !bytes.Equal(b, want[100:1100]) {
		t.Errorf("range differs")
	}
	l, err = newSource(t, "gs://models/llama.txt", emulator(f.srv.URL())).List(context.Background())
	if err != nil || len(l.Files) != 1 || l.Files[0].Path != "llama.txt" {
		t.Fatalf("llama.txt: %+v, %v", l, err)
	}
}

func TestWholeBucketAndRevision(t *testing.T) {
	f := newFakeGCS(t, obj("flat", "a.bin", []byte("aaaa")), obj("flat", "sub/b.bin", []byte("bb")))
	src := newSource(t, "gs://flat", emulator(f.srv.URL()))
	l1, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l1.Files) != 2 || l1.Files[0].Path != "a.bin" || l1.Files[1].Path != "sub/b.bin" {
		t.Fatalf("files %+v", l1.Files)
	}
	l2, _ := src.List(context.Background())
	if l2.Revision != l1.Revision {
		t.Errorf("revision changed without a change")
	}
	f.srv.CreateObject(obj("flat", "a.bin", []byte("AAAA")))
	l3, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l3.Revision == l1.Revision {
		t.Errorf("revision unchanged after a.bin was replaced")
	}
	// The old generation is gone: a read of it must fail as a change.
	_, err = src.Open(context.Background(), l1.Files[0], 0, 2)
	wantKind(t, err, modelload.KindIntegrity)
	if !strings.Contains(err.Error(), "object changed during download") {
		t.Errorf("message %q", err)
	}
}

func TestGzipEncodedObject(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	plain := bytes.Repeat([]byte("tokenizer "), 1000)
	zw.Write(plain)
	zw.Close()
	o := obj("enc", "m/tok.json", z.Bytes())
	o.ContentEncoding = "gzip"
	f := newFakeGCS(t, o, obj("enc", "m/plain.bin", []byte("plain")))
	src := newSource(t, "gs://enc/m", emulator(f.srv.URL()))
	l, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 2 || l.Files[1].Path != "tok.json" || l.Files[1].Size != -1 || l.Files[1].MD5 != "" {
		t.Fatalf("files %+v: want tok.json of unknown size and no MD5", l.Files)
	}
	if l.Files[0].Size != 5 || l.Files[0].MD5 == "" {
		t.Errorf("plain.bin %+v", l.Files[0])
	}
	if b := readRange(t, src, l.Files[1], 0, -1); !bytes.Equal(b, plain) {
		t.Errorf("gzip object read as %d bytes, want the %d decompressed", len(b), len(plain))
	}
}

func TestMissingBucketAndPrefix(t *testing.T) {
	f, _ := smallInBucket(t)
	_, err := newSource(t, "gs://no-such-bucket/llama", emulator(f.srv.URL())).List(context.Background())
	wantKind(t, err, modelload.KindNotFound)
	if !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
		t.Errorf("message %q does not name the bucket", err)
	}
	_, err = newSource(t, "gs://models/absent", emulator(f.srv.URL())).List(context.Background())
	wantKind(t, err, modelload.KindNotFound)
	if !strings.Contains(err.Error(), `"absent"`) {
		t.Errorf("message %q does not name the prefix", err)
	}
}

func TestBadNameRefused(t *testing.T) {
	f := newFakeGCS(t, obj("evil", "m/ok.bin", []byte("ok")), obj("evil", "m/../../etc/passwd", []byte("root")))
	_, err := newSource(t, "gs://evil/m", emulator(f.srv.URL())).List(context.Background())
	wantKind(t, err, modelload.KindIntegrity)
	if !strings.Contains(err.Error(), `"m/../../etc/passwd"`) {
		t.Errorf("message %q does not name the object", err)
	}
}

// jsonError serves one JSON API error for every request.
func jsonError(t *testing.T, status int, msg string, hdr map[string]string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": status, "message": msg}})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestForbidden(t *testing.T) {
	const msg = "sa@p.iam.gserviceaccount.com does not have storage.objects.list access to the Google Cloud Storage bucket."
	srv := jsonError(t, http.StatusForbidden, msg, nil)
	src := newSource(t, "gs://models/llama", emulator(srv.URL))
	_, err := src.List(context.Background())
	wantKind(t, err, modelload.KindAuth)
	if !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "gs://models/llama/") {
		t.Errorf("message %q: want the server's message and the URI", err)
	}
	_, err = src.Open(context.Background(), modelload.File{Path: "x", Key: "llama/x", Size: 10}, 0, 10)
	wantKind(t, err, modelload.KindAuth)

	// Without credentials the message says the request was anonymous.
	old := defaultEndpoint
	defaultEndpoint = srv.URL
	t.Cleanup(func() { defaultEndpoint = old })
	src = newSource(t, "gs://models/llama", nil)
	if !src.anonymous {
		t.Fatal("no credentials, yet not anonymous")
	}
	_, err = src.List(context.Background())
	wantKind(t, err, modelload.KindAuth)
	if !strings.Contains(err.Error(), "anonymous") || !strings.Contains(err.Error(), "GOOGLE_APPLICATION_CREDENTIALS") {
		t.Errorf("message %q does not say the request was anonymous", err)
	}
}

func TestRetryable(t *testing.T) {
	srv := jsonError(t, http.StatusTooManyRequests, "rate limited", map[string]string{"Retry-After": "3"})
	src := newSource(t, "gs://models/llama", emulator(srv.URL))
	_, err := src.Open(context.Background(), modelload.File{Path: "x", Key: "llama/x", Size: 10, Version: "1"}, 0, 10)
	e := wantKind(t, err, modelload.KindNetwork)
	if !e.Retry || e.RetryAfter.Seconds() != 3 {
		t.Errorf("retry %v after %v, want true after 3s", e.Retry, e.RetryAfter)
	}
}

// TestRangeIgnored: a server that answers a ranged read with the whole
// object (200) must not have its bytes taken for the range.
func TestRangeIgnored(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "0123456789")
	}))
	t.Cleanup(srv.Close)
	src := newSource(t, "gs://b/m", emulator(srv.URL))
	f := modelload.File{Path: "x", Key: "m/x", Size: 10, Version: "1"}
	_, err := src.Open(context.Background(), f, 4, 3)
	wantKind(t, err, modelload.KindInternal)
	if b := readRange(t, src, f, 0, 10); string(b) != "0123456789" {
		t.Errorf("whole read %q", b)
	}
}

func TestEmulatorHostForms(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:4443":                    "http://127.0.0.1:4443",
		"localhost:9023":                    "http://localhost:9023",
		"http://127.0.0.1:4443":             "http://127.0.0.1:4443",
		"https://gcs.local:4443/":           "https://gcs.local:4443",
		"http://localhost:9023/storage/v1/": "http://localhost:9023",
	} {
		if got, err := EmulatorBase(in); err != nil || got != want {
			t.Errorf("EmulatorBase(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://host:1", "http://", "host/path"} {
		_, err := EmulatorBase(bad)
		wantKind(t, err, modelload.KindUsage)
	}
	// Both forms, end to end.
	f, m := smallInBucket(t)
	hostPort := strings.TrimPrefix(f.srv.URL(), "http://")
	for _, env := range []string{hostPort, "http://" + hostPort} {
		l, err := newSource(t, "gs://models/llama", emulator(env)).List(context.Background())
		if err != nil || len(l.Files) != len(m) {
			t.Errorf("STORAGE_EMULATOR_HOST=%s: %v, %d files", env, err, len(l.Files))
		}
	}
}

// TestServiceAccountKey: GOOGLE_APPLICATION_CREDENTIALS (read through
// Getenv) names a service account key whose token_uri is a loopback token
// server; the storage requests carry its access token.
func TestServiceAccountKey(t *testing.T) {
	var tokenReqs atomic.Int32
	var refuse atomic.Bool
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokenReqs.Add(1)
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if refuse.Load() || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || r.Form.Get("assertion") == "" {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
			return
		}
		io.WriteString(w, `{"access_token":"ya29.test-token","expires_in":3600,"token_type":"Bearer"}`)
	}))
	t.Cleanup(tokenSrv.Close)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	sa, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "p",
		"private_key_id": "k1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "loader@p.iam.gserviceaccount.com",
		"token_uri":      tokenSrv.URL,
	})
	file := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(file, sa, 0o600); err != nil {
		t.Fatal(err)
	}

	f, m := smallInBucket(t)
	old := defaultEndpoint
	defaultEndpoint = f.front.URL
	t.Cleanup(func() { defaultEndpoint = old })
	creds := env{"GOOGLE_APPLICATION_CREDENTIALS": file}
	src := newSource(t, "gs://models/llama", creds)
	l, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b := readRange(t, src, l.Files[0], 0, -1); !bytes.Equal(b, m[l.Files[0].Path]) {
		t.Errorf("read differs")
	}
	for _, r := range f.requests() {
		if got := r.Header.Get("Authorization"); got != "Bearer ya29.test-token" {
			t.Errorf("%s %s: Authorization %q", r.Method, r.URL.Path, got)
		}
	}
	if n := tokenReqs.Load(); n != 1 {
		t.Errorf("%d token requests, want 1 (cached)", n)
	}

	// A refused token is KindAuth, not a network error to retry.
	refuse.Store(true)
	_, err = newSource(t, "gs://models/llama", creds).List(context.Background())
	wantKind(t, err, modelload.KindAuth)
	if !strings.Contains(err.Error(), "access token") {
		t.Errorf("message %q", err)
	}

	// An unreadable credentials file fails New; it is no reason to go
	// anonymous.
	_, err = New(context.Background(), "gs://models/llama", modelload.SourceOptions{Getenv: func(k string) string {
		if k == "GOOGLE_APPLICATION_CREDENTIALS" {
			return filepath.Join(t.TempDir(), "missing.json")
		}
		return ""
	}})
	wantKind(t, err, modelload.KindAuth)
}

// TestDefaultCredentials: credentials from the default chain (the metadata
// server, here a stub) are used for every request.
func TestDefaultCredentials(t *testing.T) {
	f, _ := smallInBucket(t)
	old, oldFind := defaultEndpoint, findDefault
	defaultEndpoint = f.front.URL
	findDefault = func(_ context.Context, p google.CredentialsParams) (*google.Credentials, error) {
		if len(p.Scopes) != 1 || p.Scopes[0] != ReadOnlyScope {
			return nil, fmt.Errorf("scopes %v", p.Scopes)
		}
		return &google.Credentials{TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "from-metadata"})}, nil
	}
	t.Cleanup(func() { defaultEndpoint, findDefault = old, oldFind })
	src := newSource(t, "gs://models/llama", nil)
	if src.anonymous {
		t.Fatal("anonymous despite credentials")
	}
	if _, err := src.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) == 0 || reqs[0].Header.Get("Authorization") != "Bearer from-metadata" {
		t.Errorf("Authorization %q", reqs[0].Header.Get("Authorization"))
	}
}

func TestBadURIs(t *testing.T) {
	for _, uri := range []string{"gs://", "gs:///prefix", "s3://b/p"} {
		_, err := New(context.Background(), uri, modelload.SourceOptions{Getenv: emulatorEnv})
		wantKind(t, err, modelload.KindUsage)
	}
	src, err := modelload.NewSource(context.Background(), "gs://b/p", modelload.SourceOptions{Getenv: emulatorEnv})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := src.(*Source); !ok {
		t.Errorf("NewSource(gs://) = %T: the scheme is not registered", src)
	}
}

func emulatorEnv(k string) string {
	if k == "STORAGE_EMULATOR_HOST" {
		return "127.0.0.1:1"
	}
	return ""
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
