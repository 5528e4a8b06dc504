package modelload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// SourceOptions are what every Source may need besides its URI.
type SourceOptions struct {
	// Getenv reads the environment (credentials, endpoints); default
	// os.Getenv. Tests pass their own.
	Getenv func(string) string
	// HTTPClient is used by every source that speaks HTTP itself (https, hf,
	// gs) and handed to the SDKs that accept one (s3, azblob, oci). Default
	// NewHTTPClient(nil).
	HTTPClient *http.Client
	// S3PathStyle forces path-style S3 addressing (http://endpoint/bucket/key);
	// it is on anyway for an IP-literal or localhost endpoint, and when
	// AWS_S3_USE_PATH_STYLE=true.
	S3PathStyle bool
	// OCIPlainHTTP talks plain HTTP to the registry; it is on anyway for
	// localhost and loopback registries, as containerd and oras do.
	OCIPlainHTTP bool
}

// Defaults fills what is unset: os.Getenv and NewHTTPClient(nil). Every
// Factory calls it first.
func (o *SourceOptions) Defaults() {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.HTTPClient == nil {
		o.HTTPClient = NewHTTPClient(nil)
	}
}

// Schemes are the URI schemes NewSource accepts, for messages.
const Schemes = "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, hf://ORG/MODEL[@REVISION], https://HOST/PATH, azblob://ACCOUNT/CONTAINER/PREFIX, https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX or oci://REGISTRY/REPOSITORY:TAG"

// Factory makes the Source of one URI. uri is the whole URI, credentials
// included: never put it in a message, use RedactURI. A malformed URI is a
// KindUsage error.
type Factory func(ctx context.Context, uri string, o SourceOptions) (Source, error)

// sourceFactories maps a scheme to its constructor; filled by Register from
// the source packages' init functions.
var sourceFactories = map[string]Factory{}

// Register makes NewSource use f for scheme. It is called from the init
// function of each source package (internal/modelload/s3, ...); a duplicate
// scheme is a programming error and panics.
func Register(scheme string, f Factory) {
	if _, dup := sourceFactories[scheme]; dup {
		panic("modelload: scheme registered twice: " + scheme)
	}
	sourceFactories[scheme] = f
}

// NewSource returns the Source for uri. A malformed URI or an unsupported
// scheme is a KindUsage error naming the accepted forms.
func NewSource(ctx context.Context, uri string, o SourceOptions) (Source, error) {
	o.Defaults()
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || rest == "" {
		return nil, Errorf(KindUsage, "model URI %q: want %s", RedactURI(uri), Schemes)
	}
	if scheme == "https" && isAzureBlobHost(rest) {
		scheme = "azblob"
	}
	f, ok := sourceFactories[scheme]
	if !ok {
		return nil, Errorf(KindUsage, "model URI %q: unsupported scheme %q; want %s", RedactURI(uri), scheme, Schemes)
	}
	return f(ctx, uri, o)
}

// isAzureBlobHost says rest (a URI after "https://") names an Azure Blob
// Storage account endpoint, the form KServe's storage initializer accepts.
func isAzureBlobHost(rest string) bool {
	host, _, _ := strings.Cut(rest, "/")
	return strings.HasSuffix(strings.ToLower(host), ".blob.core.windows.net")
}

// NewHTTPClient returns the HTTP client of every source: proxies from
// HTTPS_PROXY/HTTP_PROXY/NO_PROXY, the system roots (which Go reads from
// SSL_CERT_FILE and SSL_CERT_DIR when set) plus extraCAs, HTTP/2, no overall
// timeout (a 30 GB file takes long; stalls are the engine's to catch) but
// bounded dial, TLS handshake and response-header waits, and a redirect
// policy that never forwards Authorization (or Cookie) to another host
// (Go's own policy forwards them to subdomains, and Hugging Face redirects
// LFS files to a CDN subdomain) and refuses a redirect from https to plain
// http for a host that is not loopback (a model fetched in the clear can be
// altered in transit).
func NewHTTPClient(extraCAs *x509.CertPool) *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Model files are already compressed or incompressible; a
		// transparently gunzipped body would not match the listed size.
		DisableCompression: true,
		ReadBufferSize:     256 << 10,
	}
	if extraCAs != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: extraCAs, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, CheckRedirect: checkRedirect}
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return fmt.Errorf("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" && !IsLoopbackHost(req.URL.Host) {
		return fmt.Errorf("refusing a redirect from https to plain http (%s)", req.URL.Host)
	}
	if req.URL.Host != via[0].URL.Host {
		req.Header.Del("Authorization")
		req.Header.Del("Cookie")
	}
	return nil
}

// IsLoopbackHost says host (a name or address, with or without a port and
// IPv6 brackets) is localhost or a loopback address: the hosts a source may
// speak plain HTTP to (tests, node-local servers and registries, as
// containerd and oras do).
func IsLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LoadCAs returns the system roots plus the PEM certificates in file.
func LoadCAs(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, Errorf(KindUsage, "CA bundle: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, Errorf(KindUsage, "CA bundle %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// SetRange asks req for the bytes [off, off+n) of a file, [off, end) when
// n < 0; the whole file (no header) when off is 0 and n < 0.
func SetRange(req *http.Request, off, n int64) {
	switch {
	case n > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	case off > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
}

// RangeBody checks a 206 or 200 answer to a request made with SetRange and
// returns its body, cut to n bytes; ok is false for any other status, which
// the caller turns into its error (the body is then still open). A 206
// whose Content-Range (RFC 9110 section 14.4) is not the range asked for is
// KindIntegrity; a 200 at an offset above 0 (a server ignoring Range) is
// KindNetwork: such a file can only be fetched in one stream from its start.
func RangeBody(resp *http.Response, what string, off, n int64) (body io.ReadCloser, ok bool, err error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, good := parseContentRange(resp.Header.Get("Content-Range"))
		if !good || start != off || (n > 0 && end != off+n-1) {
			resp.Body.Close()
			return nil, true, Errorf(KindIntegrity, "GET %s: asked for bytes %d-%d, got Content-Range %q (the file changed at the source?)",
				what, off, off+n-1, resp.Header.Get("Content-Range"))
		}
		return resp.Body, true, nil
	case http.StatusOK:
		if off > 0 {
			resp.Body.Close()
			return nil, true, Errorf(KindNetwork, "GET %s: the server ignored the Range request for bytes %d- (HTTP 200): it does not serve ranges, so the file can only be fetched in one stream from the start", what, off)
		}
		if n > 0 {
			return limitedBody{io.LimitReader(resp.Body, n), resp.Body}, true, nil
		}
		return resp.Body, true, nil
	}
	return nil, false, nil
}

type limitedBody struct {
	io.Reader
	io.Closer
}

// parseContentRange parses "bytes START-END/TOTAL".
func parseContentRange(v string) (start, end int64, ok bool) {
	v, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	r, _, _ := strings.Cut(v, "/")
	a, b, found := strings.Cut(r, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	return start, end, err1 == nil && err2 == nil && start <= end
}
