// Package httpsrc is the model loader's Source for a single file at an
// HTTPS URL, URI schemes "https" and "http": https://HOST/PATH/NAME[?QUERY]
// (a presigned S3, GCS or Azure SAS URL works as it is; the query is never
// shown in messages). The model is that one file, named by the URL path's
// last element (percent-decoded); a name ending in .tar, .tar.gz, .tgz or
// .zip is an archive the engine unpacks (Listing.Archive).
//
// Plain http is accepted only for loopback hosts (localhost, 127.0.0.0/8,
// ::1), for tests and node-local servers; any other http:// URI is a
// KindUsage error, since a model fetched in the clear can be altered in
// transit. For the same reason a redirect from https to plain http (other
// than to loopback) is refused.
//
// List sends HEAD (and, when a server refuses HEAD with 403, 405, 501 or
// another 4xx than 401, 404, 410 and 429 — a presigned URL is signed for
// GET only —, GET with "Range: bytes=0-0" instead) and reads:
//
//   - the size from Content-Length (or the total of Content-Range);
//   - range support from "Accept-Ranges: bytes" (RFC 9110 section 14.3);
//     when the header is absent, a "Range: bytes=0-0" GET decides (206:
//     ranges work). A server without range support gives File.Size -1, so
//     that the engine fetches the file in one stream (source.go: "A file of
//     unknown size is fetched in one stream");
//   - the ETag as File.Version: a strong ETag is sent as If-Match with
//     every range, so that every range comes from the same version (a
//     changed file answers 412, a KindIntegrity error). Without a strong
//     ETag nothing ties the ranges together: the engine's size check is
//     the only guard;
//   - Listing.Revision: the ETag's opaque value (quotes and W/ removed),
//     else Last-Modified as RFC 3339 UTC, else "sha256:" and the hex
//     SHA-256 of the whole URL (query included).
//
// Open sends GET with a Range header. A server that answers 200 (ignoring
// Range) is fine at offset 0 (the body is cut to the length asked for) and
// an error at any other offset ("the server ignored the Range request"):
// such a server must be listed with Size -1, which List does.
package httpsrc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/mlplane/mlplane/internal/modelload"
)

func init() {
	modelload.Register("https", New)
	modelload.Register("http", New)
}

// IsArchive says whether name (a file name) is an archive the engine
// unpacks: it ends, in any case, in .tar, .tar.gz, .tgz or .zip.
func IsArchive(name string) bool {
	n := strings.ToLower(name)
	for _, ext := range []string{".tar", ".tar.gz", ".tgz", ".zip"} {
		if strings.HasSuffix(n, ext) {
			return true
		}
	}
	return false
}

type source struct {
	url    string // the whole URL, credentials included: never in a message
	shown  string // modelload.RedactURI(url)
	name   string // the file's Path
	client *http.Client
}

// New is the Factory of the https and http schemes (see the package
// documentation). It makes no request. o.HTTPClient defaults to
// modelload.NewHTTPClient(nil).
func New(_ context.Context, uri string, o modelload.SourceOptions) (modelload.Source, error) {
	shown := modelload.RedactURI(uri)
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: want https://HOST/PATH", shown)
	}
	if u.Scheme == "http" && !modelload.IsLoopbackHost(u.Hostname()) {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: plain http is refused for a host that is not loopback (the model could be altered in transit); use https://", shown)
	}
	base := path.Base(u.Path)
	if u.Path == "" || strings.HasSuffix(u.Path, "/") || base == "/" || base == "." {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: the URL path names no file (want https://HOST/PATH/NAME)", shown)
	}
	name, err := modelload.CleanPath(base)
	if err != nil {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: %w", shown, err)
	}
	c := o.HTTPClient
	if c == nil {
		c = modelload.NewHTTPClient(nil)
	}
	return &source{url: uri, shown: shown, name: name, client: c}, nil
}

func (s *source) request(ctx context.Context, method string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.url, nil)
	if err != nil {
		return nil, modelload.Errorf(modelload.KindUsage, "%s %s: %v", method, s.shown, redactErr(err, s.url, s.shown))
	}
	req.Header.Set("User-Agent", "mlplane-model-loader")
	req.Header.Set("Accept-Encoding", "identity")
	return req, nil
}

// redactErr returns err's message with the URL (which may hold a
// signature) replaced by its redacted form.
func redactErr(err error, full, shown string) string {
	return strings.ReplaceAll(err.Error(), full, shown)
}

func (s *source) do(req *http.Request) (*http.Response, error) {
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, modelload.Classify(fmt.Errorf("%s %s: %w", req.Method, s.shown, err))
	}
	return resp, nil
}

// headRefused says a HEAD answered with status is worth retrying as GET.
func headRefused(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusNotFound, http.StatusGone, http.StatusTooManyRequests, http.StatusRequestTimeout:
		return false
	case http.StatusNotImplemented:
		return true
	}
	return status >= 400 && status < 500
}

// probe is what List learns from one answer.
type probe struct {
	size         int64 // -1 unknown
	ranges       int   // 1 yes, 0 unknown, -1 no
	etag         string
	lastModified string
}

// List implements modelload.Source.
func (s *source) List(ctx context.Context) (*modelload.Listing, error) {
	req, err := s.request(ctx, http.MethodHead)
	if err != nil {
		return nil, err
	}
	resp, err := s.do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	var p probe
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		p = probe{size: resp.ContentLength, etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified")}
		if resp.StatusCode != http.StatusOK {
			p.size = -1
		}
		switch ar := strings.ToLower(strings.TrimSpace(resp.Header.Get("Accept-Ranges"))); {
		case strings.Contains(ar, "bytes"):
			p.ranges = 1
		case ar == "none":
			p.ranges = -1
		}
		if p.ranges == 0 {
			// No Accept-Ranges: ask for one byte to find out.
			g, err := s.rangeProbe(ctx)
			if err != nil {
				return nil, err
			}
			p.ranges = g.ranges
			if p.size < 0 {
				p.size = g.size
			}
			if p.etag == "" {
				p.etag = g.etag
			}
			if p.lastModified == "" {
				p.lastModified = g.lastModified
			}
		}
	case headRefused(resp.StatusCode):
		if p, err = s.rangeProbe(ctx); err != nil {
			return nil, err
		}
	default:
		return nil, modelload.HTTPError(resp, "HEAD "+s.shown, "")
	}
	f := modelload.File{Path: s.name, Size: p.size, Version: p.etag}
	if p.ranges < 0 && p.size != 0 {
		f.Size = -1
	}
	return &modelload.Listing{Revision: revision(p, s.url), Files: []modelload.File{f}, Archive: IsArchive(s.name)}, nil
}

// rangeProbe GETs the first byte: 206 says ranges work (and Content-Range
// gives the size), 200 that the server ignores Range (the body is not
// read), 416 with "bytes */0" an empty file.
func (s *source) rangeProbe(ctx context.Context) (probe, error) {
	req, err := s.request(ctx, http.MethodGet)
	if err != nil {
		return probe{}, err
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := s.do(req)
	if err != nil {
		return probe{}, err
	}
	defer resp.Body.Close()
	p := probe{size: -1, etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified")}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		p.ranges = 1
		if _, total, ok := strings.Cut(resp.Header.Get("Content-Range"), "/"); ok {
			if n, err := strconv.ParseInt(total, 10, 64); err == nil && n >= 0 {
				p.size = n
			}
		}
	case http.StatusOK:
		p.ranges = -1
		p.size = resp.ContentLength
	case http.StatusRequestedRangeNotSatisfiable:
		if strings.TrimSpace(resp.Header.Get("Content-Range")) == "bytes */0" {
			p.ranges, p.size = 1, 0
			break
		}
		return probe{}, modelload.HTTPError(resp, "GET "+s.shown, "")
	default:
		return probe{}, modelload.HTTPError(resp, "GET "+s.shown, "")
	}
	return p, nil
}

// revision is the ETag's opaque value, else Last-Modified in RFC 3339
// UTC, else "sha256:" and the digest of the URL.
func revision(p probe, full string) string {
	if e := opaque(p.etag); e != "" {
		return e
	}
	if t, err := http.ParseTime(p.lastModified); err == nil {
		return t.UTC().Format(time.RFC3339)
	}
	sum := sha256.Sum256([]byte(full))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// opaque is an entity tag without W/ and quotes.
func opaque(etag string) string {
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(etag), "W/"), `"`)
}

// Open implements modelload.Source.
func (s *source) Open(ctx context.Context, f modelload.File, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	req, err := s.request(ctx, http.MethodGet)
	if err != nil {
		return nil, err
	}
	modelload.SetRange(req, off, n)
	if e := strings.TrimSpace(f.Version); e != "" && !strings.HasPrefix(e, "W/") {
		// RFC 9110 section 13.1.1: a strong tag; If-Match fails (412) if
		// the file changed since List.
		req.Header.Set("If-Match", e)
	}
	resp, err := s.do(req)
	if err != nil {
		return nil, err
	}
	if body, ok, err := modelload.RangeBody(resp, s.shown, off, n); ok {
		return body, err
	}
	switch resp.StatusCode {
	case http.StatusPreconditionFailed:
		resp.Body.Close()
		return nil, modelload.Errorf(modelload.KindIntegrity, "GET %s: the file changed at the source during the download (its ETag is no longer %s)", s.shown, f.Version)
	}
	defer resp.Body.Close()
	return nil, modelload.HTTPError(resp, "GET "+s.shown, "")
}
