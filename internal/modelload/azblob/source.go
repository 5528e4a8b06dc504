package azblob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mlplane/mlplane/internal/modelload"
)

// List lists the blobs under PREFIX/ (flat, every depth), or the single blob
// PREFIX when nothing is under PREFIX/. File.Path is the name relative to
// PREFIX/ (the base name for a single blob), File.Size the blob's length in
// bytes, File.MD5 its Content-MD5 when the blob has one (set by a
// single-request upload, or by the uploader), File.Version its ETag and
// File.Key its full name. Listing.Revision is "sha256:" and the hex SHA-256
// of the sorted lines "path NUL size NUL etag LF": it changes when any blob
// is added, removed or rewritten.
//
// Errors: KindNotFound for a missing container or when no blob matches;
// KindAuth for a refused credential (HTTP 401/403); KindIntegrity for a blob
// name that is not a safe relative path (absolute, "..", reserved); 5xx and
// 429 are retryable KindNetwork (the SDK does not retry; the engine does).
func (s *Source) List(ctx context.Context) (*modelload.Listing, error) {
	prefix := s.loc.prefix
	dir := prefix
	if dir != "" && !strings.HasSuffix(dir, "/") {
		dir += "/"
	}
	files, err := s.listDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 && prefix != "" && !strings.HasSuffix(prefix, "/") {
		f, err := s.single(ctx, prefix)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, s.notFound(fmt.Errorf("%s: no blobs", s.loc.display))
	}
	return &modelload.Listing{Revision: revision(files), Files: files}, nil
}

func (s *Source) listDir(ctx context.Context, dir string) ([]modelload.File, error) {
	var files []modelload.File
	opts := &container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Metadata: true}}
	if dir != "" {
		opts.Prefix = &dir
	}
	pager := s.client.NewListBlobsFlatPager(opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, s.fail(err, "list "+s.loc.display)
		}
		if page.Segment == nil {
			continue
		}
		for _, it := range page.Segment.BlobItems {
			if it == nil || it.Name == nil || it.Properties == nil {
				continue
			}
			name := *it.Name
			if strings.HasSuffix(name, "/") || isFolder(it.Metadata) {
				continue
			}
			f, err := s.file(strings.TrimPrefix(name, dir), name, it.Properties.ContentLength, it.Properties.ETag, it.Properties.ContentMD5)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
		}
	}
	return files, nil
}

// single describes the blob named name, or says it does not exist.
func (s *Source) single(ctx context.Context, name string) (modelload.File, error) {
	p, err := s.client.NewBlobClient(name).GetProperties(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) || statusOf(err) == http.StatusNotFound {
			return modelload.File{}, s.notFound(fmt.Errorf("%s: no blob %q and no blobs under %q", s.loc.display, name, name+"/"))
		}
		return modelload.File{}, s.fail(err, "HEAD "+s.loc.display)
	}
	if isFolder(p.Metadata) {
		return modelload.File{}, s.notFound(fmt.Errorf("%s: an empty directory", s.loc.display))
	}
	return s.file(path.Base(name), name, p.ContentLength, p.ETag, p.ContentMD5)
}

func (s *Source) file(rel, name string, size *int64, etag *azcore.ETag, md5 []byte) (modelload.File, error) {
	p, err := modelload.CleanPath(rel)
	if err != nil {
		return modelload.File{}, modelload.Errorf(modelload.KindIntegrity, "%s: blob %q: %w", s.loc.display, name, err)
	}
	f := modelload.File{Path: p, Size: -1, Key: name}
	if size != nil {
		f.Size = *size
	}
	if etag != nil {
		f.Version = string(*etag)
	}
	if len(md5) == 16 {
		f.MD5 = hex.EncodeToString(md5)
	}
	return f, nil
}

// isFolder says blob metadata marks an ADLS Gen2 directory.
func isFolder(md map[string]*string) bool {
	for k, v := range md {
		if strings.EqualFold(k, "hdi_isfolder") && v != nil && strings.EqualFold(*v, "true") {
			return true
		}
	}
	return false
}

func revision(files []modelload.File) string {
	fs := append([]modelload.File(nil), files...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
	h := sha256.New()
	for _, f := range fs {
		fmt.Fprintf(h, "%s\x00%d\x00%s\n", f.Path, f.Size, f.Version)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Open reads bytes [off, off+n) of f (to the end when n < 0) with one Get
// Blob request carrying a Range header and If-Match: f.Version, so that
// every range of one download comes from the blob version that was listed.
// Errors: a blob rewritten since the listing is KindIntegrity (HTTP 412, not
// retried: list again); otherwise as List.
func (s *Source) Open(ctx context.Context, f modelload.File, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	opts := &blob.DownloadStreamOptions{}
	if off > 0 || n > 0 {
		opts.Range = blob.HTTPRange{Offset: off, Count: max(n, 0)}
	}
	if f.Version != "" {
		etag := azcore.ETag(f.Version)
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}}
	}
	resp, err := s.client.NewBlobClient(f.Key).DownloadStream(ctx, opts)
	if err != nil {
		what := fmt.Sprintf("GET %s (%s, bytes %d-)", s.loc.display, f.Key, off)
		if bloberror.HasCode(err, bloberror.ConditionNotMet) || statusOf(err) == http.StatusPreconditionFailed {
			return nil, modelload.Errorf(modelload.KindIntegrity, "%s: the blob changed since it was listed (ETag %s)", what, f.Version)
		}
		return nil, s.fail(err, what)
	}
	if resp.Body == nil {
		return nil, modelload.Errorf(modelload.KindInternal, "GET %s (%s): no body", s.loc.display, f.Key)
	}
	return resp.Body, nil
}

func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func (s *Source) notFound(err error) error {
	return &modelload.Error{Kind: modelload.KindNotFound, Err: s.scrub(s.hint(err))}
}

// hint adds why the source is anonymous to err's message.
func (s *Source) hint(err error) error {
	if s.auth == AuthAnonymous {
		return fmt.Errorf("%w (anonymous access: %s)", err, s.identityNote)
	}
	return err
}

// fail classifies an SDK error. what names the request; it must not hold
// credentials.
func (s *Source) fail(err error, what string) error {
	var re *azcore.ResponseError
	var refused *azidentity.AuthenticationFailedError
	var e *modelload.Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &re):
		code := re.ErrorCode
		if re.RawResponse != nil {
			e = modelload.HTTPError(re.RawResponse, what, code)
		} else {
			e = modelload.HTTPError(&http.Response{StatusCode: re.StatusCode, Status: fmt.Sprintf("%d %s", re.StatusCode, http.StatusText(re.StatusCode))}, what, code)
		}
		switch code {
		case string(bloberror.ContainerNotFound), string(bloberror.BlobNotFound), string(bloberror.ResourceNotFound):
			e.Kind, e.Retry = modelload.KindNotFound, false
		case string(bloberror.AuthenticationFailed), string(bloberror.AuthorizationFailure),
			string(bloberror.AuthorizationPermissionMismatch), string(bloberror.NoAuthenticationInformation),
			string(bloberror.InsufficientAccountPermissions), "PublicAccessNotPermitted":
			e.Kind, e.Retry = modelload.KindAuth, false
		case string(bloberror.ServerBusy), string(bloberror.OperationTimedOut), string(bloberror.InternalError):
			e.Kind, e.Retry = modelload.KindNetwork, true
		}
		if e.Kind == modelload.KindAuth || e.Kind == modelload.KindNotFound {
			e.Err = s.hint(e.Err)
		}
		e.Err = s.scrub(e.Err)
		return e
	case errors.As(err, &refused):
		return &modelload.Error{Kind: modelload.KindAuth, Err: s.scrub(fmt.Errorf("%s: Azure identity: %w", what, err))}
	}
	c := modelload.Classify(err)
	return &modelload.Error{Kind: c.Kind, Retry: c.Retry, RetryAfter: c.RetryAfter, Err: s.scrub(fmt.Errorf("%s: %w", what, err))}
}

// queryRE matches a URL's query.
var queryRE = regexp.MustCompile(`(?i)(https?://[^\s"'?]*)\?[^\s"']*`)

// scrub returns err with a message free of URL queries, the SAS token and
// the account key; errors.Is and errors.As still see err's chain.
func (s *Source) scrub(err error) error {
	msg := queryRE.ReplaceAllString(err.Error(), "$1?REDACTED")
	for _, secret := range []string{s.loc.sas, s.loc.key} {
		if len(secret) >= 8 {
			msg = strings.ReplaceAll(msg, secret, "REDACTED")
		}
	}
	if i := strings.Index(s.loc.sas, "sig="); i >= 0 {
		sig, _, _ := strings.Cut(s.loc.sas[i+4:], "&")
		if len(sig) >= 8 {
			msg = strings.ReplaceAll(msg, sig, "REDACTED")
		}
	}
	return &scrubbed{msg: msg, err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }
