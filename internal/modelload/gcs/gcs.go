// Package gcs is the modelload Source of gs://BUCKET/PREFIX URIs: Google
// Cloud Storage through its JSON API, spoken over net/http, with
// golang.org/x/oauth2/google for credentials.
//
// Importing the package registers the "gs" scheme with modelload.Register.
//
// # Why not cloud.google.com/go/storage
//
// The loader needs two calls (list objects, read a byte range of one
// generation). Measured with go1.26.8, `go build -ldflags='-s -w'`, linux/
// amd64, on three throwaway programs that list a prefix and read a range:
//
//	net/http only (baseline)                       5,902,601 bytes
//	JSON API over net/http + x/oauth2/google       7,115,017 bytes  (+1.2 MB)
//	cloud.google.com/go/storage v1.65.0           33,030,409 bytes  (+27.1 MB)
//
// The official client brings gRPC, OpenTelemetry and the new auth library
// into an init container image that runs once per pod start, for nothing
// the loader uses; the JSON API is stable and small.
//
// # Credentials
//
// With STORAGE_EMULATOR_HOST set (host:port, or a URL with scheme, as the
// official client accepts) every request goes to that emulator without
// authentication. Otherwise: GOOGLE_APPLICATION_CREDENTIALS (read through
// SourceOptions.Getenv; a service account key, an authorized user, an
// external account for workload identity federation, or an impersonated
// service account), else the gcloud well-known file, else the metadata
// server (GKE workload identity, the node's service account), with the
// scope devstorage.read_only. When none is found the requests are anonymous,
// which public buckets allow; a 401 or 403 then says so. A
// GOOGLE_APPLICATION_CREDENTIALS that cannot be read is a KindAuth error, not
// a silent fall back.
//
// # Prefixes
//
// As for s3://: an empty PREFIX is the whole bucket; objects under PREFIX/
// make the model at their paths relative to PREFIX/; otherwise an object
// named exactly PREFIX is a one-file model named by its base name. Names
// ending in "/" (folder placeholders) are skipped; a name that is not a safe
// relative path fails the listing (KindIntegrity).
//
// # Integrity and versions
//
// File.MD5 is the object's md5Hash (composite objects have none; they are
// checked by size). File.Version is the object's generation: every read
// asks for that generation, so all ranges of a file come from the same
// content, and an object replaced or deleted during the download fails with
// KindIntegrity "object changed during download". An object stored with
// Content-Encoding: gzip is served decompressed (GCS's decompressive
// transcoding, what gsutil and gcloud save too); its size and MD5 are the
// compressed bytes', so it is listed with Size -1 and no MD5 and read in one
// stream.
//
// Listing.Revision is "sha256:" and the hex SHA-256 of one line
// "PATH\tSIZE\tGENERATION\n" per file, sorted by PATH (SIZE as stored).
package gcs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Scheme is the URI scheme this package registers.
const Scheme = "gs"

// DefaultEndpoint is Google Cloud Storage's; ReadOnlyScope the OAuth scope
// requested.
const (
	DefaultEndpoint = "https://storage.googleapis.com"
	ReadOnlyScope   = "https://www.googleapis.com/auth/devstorage.read_only"
)

func init() { modelload.Register(Scheme, New) }

// Test hooks: the endpoint used without an emulator, and how default
// credentials are found (the real one probes the metadata server's address).
var (
	defaultEndpoint = DefaultEndpoint
	findDefault     = google.FindDefaultCredentialsWithParams
)

// Source reads one gs://BUCKET/PREFIX. It is safe for concurrent use.
type Source struct {
	uri       string // redacted, for messages
	bucket    string
	prefix    string
	base      string // scheme://host of the JSON API, no trailing slash
	client    *http.Client
	anonymous bool
	// pageSize is the listing's maxResults; 0 is the server's default
	// (1000).
	pageSize int
}

// New is the modelload.Factory of gs:// URIs. It resolves the endpoint and
// the credentials (see the package doc) but sends no request to the bucket.
// Errors: a malformed URI or STORAGE_EMULATOR_HOST is KindUsage, an
// unreadable GOOGLE_APPLICATION_CREDENTIALS KindAuth.
func New(ctx context.Context, uri string, o modelload.SourceOptions) (modelload.Source, error) {
	o.Defaults()
	red := modelload.RedactURI(uri)
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: want gs://BUCKET/PREFIX", red)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" || strings.ContainsAny(bucket, "?#@:%") {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: want gs://BUCKET/PREFIX with a bucket name", red)
	}
	s := &Source{uri: red, bucket: bucket, prefix: prefix, client: o.HTTPClient}

	if host := o.Getenv("STORAGE_EMULATOR_HOST"); host != "" {
		base, err := EmulatorBase(host)
		if err != nil {
			return nil, err
		}
		s.base = base
		return s, nil
	}
	s.base = defaultEndpoint
	creds, err := credentials(ctx, o)
	if err != nil {
		return nil, err
	}
	if creds == nil {
		s.anonymous = true
		return s, nil
	}
	base := o.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	s.client = &http.Client{
		Transport:     &oauth2.Transport{Source: tokenSource{creds.TokenSource}, Base: base},
		CheckRedirect: o.HTTPClient.CheckRedirect,
		Timeout:       o.HTTPClient.Timeout,
	}
	return s, nil
}

// EmulatorBase returns the endpoint STORAGE_EMULATOR_HOST selects, as the
// official client reads it: "host:port" is http://host:port, a value with
// a scheme ("https://host:port/") is that scheme and host; any path is
// dropped. An unparsable value is a KindUsage error.
func EmulatorBase(host string) (string, error) {
	u := &url.URL{Scheme: "http", Host: host}
	if strings.Contains(host, "://") {
		var err error
		u, err = url.Parse(host)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return "", modelload.Errorf(modelload.KindUsage, "STORAGE_EMULATOR_HOST %q: want HOST:PORT or http(s)://HOST:PORT", modelload.RedactURI(host))
		}
	} else if host == "" || strings.ContainsAny(host, "/?#@") {
		return "", modelload.Errorf(modelload.KindUsage, "STORAGE_EMULATOR_HOST %q: want HOST:PORT or http(s)://HOST:PORT", host)
	}
	return u.Scheme + "://" + u.Host, nil
}

// credentials finds the Google credentials (nil: none, go anonymous).
// Token requests use o.HTTPClient (proxies, CAs) and outlive ctx.
func credentials(ctx context.Context, o modelload.SourceOptions) (*google.Credentials, error) {
	ctx = context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, o.HTTPClient)
	params := google.CredentialsParams{Scopes: []string{ReadOnlyScope}}
	if file := o.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, modelload.Errorf(modelload.KindAuth, "GOOGLE_APPLICATION_CREDENTIALS: %v", err)
		}
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(b, &head); err != nil {
			return nil, modelload.Errorf(modelload.KindAuth, "GOOGLE_APPLICATION_CREDENTIALS %s is not a JSON credentials file: %v", file, err)
		}
		switch t := google.CredentialsType(head.Type); t {
		case google.ServiceAccount, google.AuthorizedUser, google.ExternalAccount,
			google.ExternalAccountAuthorizedUser, google.ImpersonatedServiceAccount:
			c, err := google.CredentialsFromJSONWithTypeAndParams(ctx, b, t, params)
			if err != nil {
				return nil, modelload.Errorf(modelload.KindAuth, "GOOGLE_APPLICATION_CREDENTIALS %s: %v", file, err)
			}
			return c, nil
		default:
			return nil, modelload.Errorf(modelload.KindAuth, "GOOGLE_APPLICATION_CREDENTIALS %s: unsupported credentials type %q", file, head.Type)
		}
	}
	c, err := findDefault(ctx, params)
	if err != nil {
		return nil, nil // anonymous: public buckets work
	}
	return c, nil
}

// tokenSource marks the token source's failures, so that they are told
// apart from the storage request's own.
type tokenSource struct{ oauth2.TokenSource }

func (ts tokenSource) Token() (*oauth2.Token, error) {
	t, err := ts.TokenSource.Token()
	if err != nil {
		return nil, &tokenError{err}
	}
	return t, nil
}

type tokenError struct{ err error }

func (e *tokenError) Error() string { return "getting a Google access token: " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// object is one item of the JSON API's objects resource.
type object struct {
	Name            string `json:"name"`
	Size            string `json:"size"`
	MD5Hash         string `json:"md5Hash"`
	Generation      string `json:"generation"`
	ContentEncoding string `json:"contentEncoding"`
}

const objectFields = "name,size,md5Hash,generation,contentEncoding"

// List lists the model (see the package doc). Errors: a missing bucket,
// or a prefix with no objects, is KindNotFound; refused or missing
// credentials KindAuth; 429 and 5xx retryable KindNetwork; an unsafe name
// KindIntegrity.
func (s *Source) List(ctx context.Context) (*modelload.Listing, error) {
	type entry struct {
		object
		path string
		size int64
	}
	var dir string
	if s.prefix != "" {
		dir = strings.TrimSuffix(s.prefix, "/") + "/"
	}
	items, err := s.listDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	single := false
	if len(items) == 0 && s.prefix != "" && !strings.HasSuffix(s.prefix, "/") {
		ob, err := s.get(ctx, s.prefix)
		if err != nil {
			return nil, err
		}
		if ob != nil {
			items, single = []object{*ob}, true
		}
	}
	if len(items) == 0 {
		if s.prefix == "" {
			return nil, modelload.Errorf(modelload.KindNotFound, "%s: bucket %q has no objects", s.uri, s.bucket)
		}
		return nil, modelload.Errorf(modelload.KindNotFound, "%s: no object %q and no objects under %q in bucket %q", s.uri, s.prefix, dir, s.bucket)
	}
	entries := make([]entry, 0, len(items))
	for _, it := range items {
		rel := strings.TrimPrefix(it.Name, dir)
		if single {
			rel = path.Base(it.Name)
		}
		p, err := modelload.CleanPath(rel)
		if err != nil {
			return nil, modelload.Errorf(modelload.KindIntegrity, "%s: refusing object name %q: %v", s.uri, it.Name, err)
		}
		n, err := strconv.ParseInt(it.Size, 10, 64)
		if err != nil || n < 0 {
			return nil, modelload.Errorf(modelload.KindInternal, "%s: object %q: size %q is not a number", s.uri, it.Name, it.Size)
		}
		entries = append(entries, entry{object: it, path: p, size: n})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })
	l := &modelload.Listing{Files: make([]modelload.File, len(entries))}
	var lines strings.Builder
	for i, e := range entries {
		if i > 0 && e.path == entries[i-1].path {
			return nil, modelload.Errorf(modelload.KindIntegrity, "%s: objects %q and %q are the same file %q", s.uri, entries[i-1].Name, e.Name, e.path)
		}
		f := modelload.File{Path: e.path, Size: e.size, MD5: md5Hex(e.MD5Hash), Version: e.Generation, Key: e.Name}
		if strings.EqualFold(e.ContentEncoding, "gzip") {
			f.Size, f.MD5 = -1, ""
		}
		l.Files[i] = f
		fmt.Fprintf(&lines, "%s\t%d\t%s\n", e.path, e.size, e.Generation)
	}
	sum := sha256.Sum256([]byte(lines.String()))
	l.Revision = "sha256:" + hex.EncodeToString(sum[:])
	return l, nil
}

// md5Hex turns the JSON API's base64 md5Hash into hex; "" when absent or
// malformed.
func md5Hex(b64 string) string {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 16 {
		return ""
	}
	return hex.EncodeToString(b)
}

// listDir lists every object whose name starts with dir, skipping folder
// placeholders (names ending in "/").
func (s *Source) listDir(ctx context.Context, dir string) ([]object, error) {
	var out []object
	token := ""
	for {
		q := url.Values{"fields": {"items(" + objectFields + "),nextPageToken"}, "projection": {"noAcl"}}
		if dir != "" {
			q.Set("prefix", dir)
		}
		if token != "" {
			q.Set("pageToken", token)
		}
		if s.pageSize > 0 {
			q.Set("maxResults", strconv.Itoa(s.pageSize))
		}
		var page struct {
			Items         []object `json:"items"`
			NextPageToken string   `json:"nextPageToken"`
		}
		u := s.base + "/storage/v1/b/" + url.PathEscape(s.bucket) + "/o?" + q.Encode()
		found, err := s.getJSON(ctx, "list", dir, u, &page)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, modelload.Errorf(modelload.KindNotFound, "list %s: bucket %q does not exist (HTTP 404)", s.objURI(dir), s.bucket)
		}
		for _, it := range page.Items {
			if !strings.HasSuffix(it.Name, "/") {
				out = append(out, it)
			}
		}
		if page.NextPageToken == "" || page.NextPageToken == token {
			return out, nil
		}
		token = page.NextPageToken
	}
}

// get returns the metadata of the object named name, nil when there is
// none.
func (s *Source) get(ctx context.Context, name string) (*object, error) {
	var ob object
	u := s.base + "/storage/v1/b/" + url.PathEscape(s.bucket) + "/o/" + url.PathEscape(name) + "?fields=" + url.QueryEscape(objectFields)
	found, err := s.getJSON(ctx, "get", name, u, &ob)
	if err != nil || !found {
		return nil, err
	}
	return &ob, nil
}

// getJSON GETs u into v; found is false on a 404.
func (s *Source) getJSON(ctx context.Context, op, name, u string, v any) (found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, modelload.Errorf(modelload.KindUsage, "%s %s: %v", op, s.objURI(name), err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return false, s.transportError(op, name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if resp.StatusCode/100 != 2 {
		return false, s.httpError(resp, op, name)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return false, modelload.Classify(fmt.Errorf("%s %s: reading the answer: %w", op, s.objURI(name), err))
	}
	return true, nil
}

// Open returns bytes [off, off+n) of f ([off, end) when n < 0): a GET of
// generation f.Version with a Range header (none for a whole read from 0).
// The answer must be 206 with the asked range, or 200 for a whole-file read
// at offset 0; anything else is an error. A generation that is gone (the
// object was replaced or deleted) is KindIntegrity; 429 and 5xx are
// retryable KindNetwork with Retry-After.
func (s *Source) Open(ctx context.Context, f modelload.File, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	u := s.base + "/download/storage/v1/b/" + url.PathEscape(s.bucket) + "/o/" + url.PathEscape(f.Key) + "?alt=media"
	if f.Version != "" {
		u += "&generation=" + url.QueryEscape(f.Version)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, modelload.Errorf(modelload.KindUsage, "GET %s: %v", s.objURI(f.Key), err)
	}
	switch {
	case n > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	case off > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, s.transportError("GET", f.Key, err)
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", off)) {
			resp.Body.Close()
			return nil, modelload.Errorf(modelload.KindInternal, "GET %s: asked for bytes from %d, got Content-Range %q", s.objURI(f.Key), off, cr)
		}
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		if off == 0 && (n < 0 || n == f.Size) {
			return resp.Body, nil
		}
		resp.Body.Close()
		return nil, modelload.Errorf(modelload.KindInternal, "GET %s: asked for %d bytes at %d, the server sent the whole object (HTTP 200)", s.objURI(f.Key), n, off)
	case (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusPreconditionFailed) && f.Version != "":
		defer resp.Body.Close()
		e := s.httpError(resp, "GET", f.Key)
		return nil, modelload.Errorf(modelload.KindIntegrity, "GET %s: object changed during download: generation %s is gone (%v)", s.objURI(f.Key), f.Version, e)
	}
	defer resp.Body.Close()
	return nil, s.httpError(resp, "GET", f.Key)
}

func (s *Source) objURI(name string) string {
	return modelload.RedactURI("gs://" + s.bucket + "/" + name)
}

// httpError turns a non-2xx answer into a *modelload.Error (see
// modelload.HTTPError) with the JSON API's error message as detail, and for
// 401/403 what to check.
func (s *Source) httpError(resp *http.Response, op, name string) *modelload.Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	detail := errorMessage(b)
	if c := resp.StatusCode; c == http.StatusUnauthorized || c == http.StatusForbidden {
		hint := "the credentials lack storage.objects.list or storage.objects.get on the bucket"
		switch {
		case s.anonymous:
			hint = "no Google credentials were found, so the request was anonymous: set GOOGLE_APPLICATION_CREDENTIALS or use workload identity"
		case c == http.StatusUnauthorized:
			hint = "the access token was refused (expired, revoked, or for another audience)"
		}
		if detail != "" {
			detail += "; "
		}
		detail += hint
	}
	return modelload.HTTPError(resp, op+" "+s.objURI(name), detail)
}

// errorMessage reads the JSON API's {"error":{"message":...}} or, for a
// plain-text body, its first 200 bytes.
func errorMessage(b []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	t := strings.TrimSpace(string(b))
	if len(t) > 200 {
		t = t[:200] + "..."
	}
	if strings.HasPrefix(t, "<") || strings.HasPrefix(t, "{") { // HTML or an unknown JSON shape
		return ""
	}
	return t
}

// transportError classifies a failed request: a refused token request is
// KindAuth, a token source that could not be reached (the metadata server
// starting up) or a network failure retryable KindNetwork.
func (s *Source) transportError(op, name string, err error) *modelload.Error {
	what := op + " " + s.objURI(name)
	var te *tokenError
	if errors.As(err, &te) {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 &&
			re.Response.StatusCode != http.StatusTooManyRequests && re.Response.StatusCode != http.StatusRequestTimeout {
			return &modelload.Error{Kind: modelload.KindAuth, Err: fmt.Errorf("%s: %w", what, te)}
		}
		if errors.Is(err, context.Canceled) {
			return &modelload.Error{Kind: modelload.KindInternal, Err: fmt.Errorf("%s: %w", what, te)}
		}
		return modelload.Retryable(modelload.KindNetwork, fmt.Errorf("%s: %w", what, te), 0)
	}
	c := modelload.Classify(err)
	return &modelload.Error{Kind: c.Kind, Retry: c.Retry, RetryAfter: c.RetryAfter, Err: fmt.Errorf("%s: %w", what, err)}
}
