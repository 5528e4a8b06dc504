package modelload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kind classifies a failure; each kind is one exit code of model-loader, so
// that an init container's status tells auth from network from disk.
type Kind int

// The kinds, with their exit codes.
const (
	// KindInternal is anything unclassified: exit 1.
	KindInternal Kind = iota
	// KindUsage is a malformed or unsupported URI or flag: exit 2.
	KindUsage
	// KindAuth is missing or refused credentials (HTTP 401/403): exit 3.
	KindAuth
	// KindNotFound is a bucket, repository, revision or file that does not
	// exist (HTTP 404): exit 4.
	KindNotFound
	// KindNetwork is a connection, TLS or server failure that outlived the
	// retries: exit 5.
	KindNetwork
	// KindDisk is too little free space or a failed write: exit 6.
	KindDisk
	// KindIntegrity is a size or digest mismatch that outlived the retries,
	// or an archive entry escaping the destination: exit 7.
	KindIntegrity
)

// ExitCode is model-loader's exit status for a failure of this kind.
func (k Kind) ExitCode() int {
	return [...]int{1, 2, 3, 4, 5, 6, 7}[k]
}

func (k Kind) String() string {
	return [...]string{"internal error", "bad input", "access denied", "not found", "network error", "disk error", "integrity error"}[k]
}

// Error is a classified failure.
type Error struct {
	Kind Kind
	// Retry says the same request may succeed later (HTTP 429 and 5xx, a
	// reset connection, a stall).
	Retry bool
	// RetryAfter is the delay the server asked for (Retry-After), 0 if none.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind k with a formatted message (%w wraps).
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// Retryable marks err as worth retrying after the given delay (0: the
// engine's backoff decides).
func Retryable(k Kind, err error, after time.Duration) *Error {
	return &Error{Kind: k, Retry: true, RetryAfter: after, Err: err}
}

// Classify returns err as an *Error: an *Error in its chain as it is,
// otherwise by what it is: a cancelled context is not retried, a TLS or
// certificate failure is KindNetwork and not retried (it will not heal), a
// reset or refused connection or a cut body is KindNetwork and retried, a
// full disk is KindDisk.
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var (
		certErr     *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalid     x509.CertificateInvalidError
		recordErr   tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return &Error{Kind: KindInternal, Err: err}
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr),
		errors.As(err, &invalid), errors.As(err, &recordErr):
		return &Error{Kind: KindNetwork, Err: err}
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EROFS):
		return &Error{Kind: KindDisk, Err: err}
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &netErr) || errors.As(err, &urlErr) {
		return &Error{Kind: KindNetwork, Retry: true, Err: err}
	}
	return &Error{Kind: KindInternal, Err: err}
}

// HTTPError turns a non-2xx HTTP response into an *Error: 401 and 403 are
// KindAuth, 404 and 410 KindNotFound, 408, 429 and 5xx retryable
// KindNetwork with the Retry-After delay (seconds or an HTTP date), 416
// KindIntegrity (the file changed size), anything else KindInternal. what
// names the request in the message ("GET s3://bucket/key"); it must not
// contain credentials. detail, when not empty, is the server's explanation.
func HTTPError(resp *http.Response, what, detail string) *Error {
	msg := fmt.Sprintf("%s: HTTP %s", what, resp.Status)
	if detail != "" {
		msg += ": " + detail
	}
	switch c := resp.StatusCode; {
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return &Error{Kind: KindAuth, Err: errors.New(msg)}
	case c == http.StatusNotFound || c == http.StatusGone:
		return &Error{Kind: KindNotFound, Err: errors.New(msg)}
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return &Error{Kind: KindNetwork, Retry: true, RetryAfter: RetryAfter(resp.Header, time.Now()), Err: errors.New(msg)}
	case c == http.StatusRequestedRangeNotSatisfiable:
		return &Error{Kind: KindIntegrity, Err: errors.New(msg + " (the file changed at the source?)")}
	}
	return &Error{Kind: KindInternal, Err: errors.New(msg)}
}

// RetryAfter reads a Retry-After header (RFC 9110 section 10.2.3): delay
// seconds or an HTTP date; 0 when absent or unreadable.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// CleanPath makes a source's object name (relative to the model root) a
// File.Path, or says why it cannot be one: absolute names, ".." elements and
// empty names are refused, so that no source can write outside the
// destination.
func CleanPath(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) || strings.Contains(name, "\\") {
		return "", fmt.Errorf("object name %q is not a relative path", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("object name %q escapes the destination (contains \"..\")", name)
		}
	}
	p := path.Clean(name)
	if p == "." || strings.HasPrefix(p, ManifestName) || strings.HasPrefix(p, partialDir) {
		return "", fmt.Errorf("object name %q is reserved", name)
	}
	return p, nil
}

// RedactURI returns u fit for logs and messages: user information and the
// whole query (which holds SAS tokens and presigned signatures) replaced by
// "REDACTED".
func RedactURI(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		// Not a URL: keep the scheme and the first path element only.
		if s, rest, ok := strings.Cut(u, "://"); ok {
			if i := strings.IndexAny(rest, "?@"); i >= 0 {
				rest = rest[:i] + "?REDACTED"
			}
			return s + "://" + rest
		}
		return "REDACTED"
	}
	if p.User != nil {
		p.User = url.User("REDACTED")
	}
	if p.RawQuery != "" {
		p.RawQuery = "REDACTED"
	}
	p.Fragment = ""
	return p.String()
}
