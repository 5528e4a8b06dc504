// Package s3source is the modelload Source of s3://BUCKET/PREFIX URIs:
// Amazon S3 and S3-compatible stores (MinIO, Ceph RGW, R2, ...), through
// the AWS SDK for Go v2, so that every credential the SDK's default chain
// knows works unchanged: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/
// AWS_SESSION_TOKEN (what model-loader gets from a Kubernetes Secret),
// shared config and credentials files (AWS_PROFILE), IRSA and EKS Pod
// Identity (web identity tokens), SSO and the EC2 instance role.
//
// Importing the package registers the "s3" scheme with modelload.Register.
//
// # Prefixes
//
// An empty PREFIX is the whole bucket. Otherwise PREFIX names a "directory"
// when objects exist under PREFIX/ (a trailing slash is optional): the
// model is every object under it, at its path relative to PREFIX/.
// When nothing is under PREFIX/ and PREFIX is one object's key, the model
// is that one file, named by the key's base name. Keys ending in "/"
// (directory markers the S3 console creates) are skipped. A key that is not
// a safe relative path (it contains "..", say) fails the listing with a
// KindIntegrity error rather than being written outside the destination.
//
// # Integrity
//
// After listing, when there are at most HeadLimit objects, each one is
// HEADed (at most HeadConcurrency at once, with checksum mode enabled):
//
//   - A full-object checksum (ChecksumType FULL_OBJECT, or no ChecksumType
//     on a single-part object) becomes File.SHA256, File.CRC64NVME or
//     File.CRC32C by its algorithm. S3 gives every object uploaded since
//     2025 a CRC64NVME one unless the client chose another algorithm, and
//     a multipart upload's CRC64NVME is a full-object checksum too, so most
//     objects have one; the engine checks it instead of the MD5, at a
//     fraction of the CPU. A multipart upload's composite checksum (a
//     checksum of the parts' checksums, "...-N") is not the content's
//     digest and is ignored; so are CRC32, SHA-1 and the rest, which the
//     engine does not compute.
//   - The ETag becomes File.MD5 only when it is 32 hex digits (a
//     single-part upload: a multipart ETag has a "-N" suffix) and the object
//     is unencrypted or SSE-S3 (AES256) encrypted. S3's ETag is the MD5 of
//     the content only for those; for SSE-KMS, DSSE-KMS and SSE-C objects
//     it is not, so it is not used. The engine checks it only when there
//     is no full-object checksum.
//
// With more than HeadLimit objects the HEADs are skipped (a listing of
// 10,000 shards should not cost 10,000 requests before the first byte);
// those files carry no digest and the engine checks their sizes only.
//
// # Revision
//
// S3 has no revision of a prefix; Listing.Revision is "sha256:" and the hex
// SHA-256 of one line "PATH\tSIZE\tETAG\n" per file, sorted by PATH (the
// ETag as S3 returns it, quotes included). Any change to a file's content
// changes its ETag and so the revision.
//
// # Consistency
//
// Every ranged GET carries If-Match with the listed ETag (File.Version), so
// all the ranges of one file come from the same object version; an object
// replaced during the download fails with S3's 412 PreconditionFailed,
// reported as KindIntegrity "object changed during download".
package s3source

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/sync/errgroup"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Scheme is the URI scheme this package registers.
const Scheme = "s3"

// DefaultRegion is the region used when neither AWS_REGION,
// AWS_DEFAULT_REGION nor the shared config names one. S3 redirects
// nothing across regions for path-style and custom endpoints, so a wrong
// region shows as an error naming the right one.
const DefaultRegion = "us-east-1"

// HeadLimit is the most objects a listing HEADs for checksums and
// encryption (see the package doc); HeadConcurrency is how many HEADs run at
// once.
const (
	HeadLimit       = 1000
	HeadConcurrency = 16
)

func init() { modelload.Register(Scheme, New) }

// Source reads one s3://BUCKET/PREFIX. It is safe for concurrent use.
type Source struct {
	uri    string // redacted, for messages
	bucket string
	prefix string
	client *s3.Client
	// pageSize is ListObjectsV2's MaxKeys; 0 is S3's default (1000).
	pageSize int32
}

// New is the modelload.Factory of s3:// URIs. It builds the S3 client (no
// request is made yet):
//
//   - credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
//     AWS_SESSION_TOKEN) read through o.Getenv when both are set, otherwise
//     the SDK's default chain (which reads the process environment itself);
//   - endpoint: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS's;
//     a value without a scheme gets https://;
//   - region: AWS_REGION, else AWS_DEFAULT_REGION, else the shared config's,
//     else DefaultRegion;
//   - path-style addressing when o.S3PathStyle, AWS_S3_USE_PATH_STYLE=true,
//     or the endpoint's host is an IP literal or localhost;
//   - o.HTTPClient's transport settings for every request, the credential
//     providers' included, plus AWS_CA_BUNDLE's certificates when set (they
//     replace the system roots, as in every AWS SDK).
//
// A URI that is not s3://BUCKET[/PREFIX] is a KindUsage error.
func New(ctx context.Context, uri string, o modelload.SourceOptions) (modelload.Source, error) {
	o.Defaults()
	red := modelload.RedactURI(uri)
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: want s3://BUCKET/PREFIX", red)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" || strings.ContainsAny(bucket, "?#@:") {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: want s3://BUCKET/PREFIX with a bucket name", red)
	}

	endpoint := firstEnv(o.Getenv, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	pathStyle := o.S3PathStyle || strings.EqualFold(o.Getenv("AWS_S3_USE_PATH_STYLE"), "true")
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" {
			return nil, modelload.Errorf(modelload.KindUsage, "S3 endpoint %q (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) is not a URL", modelload.RedactURI(endpoint))
		}
		if isLocalHost(u.Hostname()) {
			pathStyle = true
		}
	}

	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(sdkHTTPClient(o.HTTPClient)),
		// Ranged GETs cannot be checked against a whole-object checksum,
		// and the engine checks digests itself.
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
	}
	if r := firstEnv(o.Getenv, "AWS_REGION", "AWS_DEFAULT_REGION"); r != "" {
		opts = append(opts, config.WithRegion(r))
	}
	if id, secret := o.Getenv("AWS_ACCESS_KEY_ID"), o.Getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(id, secret, o.Getenv("AWS_SESSION_TOKEN"))))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		// A malformed shared config file or profile; the message names the
		// file, never a key.
		return nil, modelload.Errorf(modelload.KindAuth, "%s: loading the AWS configuration: %w", red, err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		so.UsePathStyle = pathStyle
		if endpoint != "" {
			so.BaseEndpoint = aws.String(endpoint)
		}
		so.DisableLogOutputChecksumValidationSkipped = true
	})
	return &Source{uri: red, bucket: bucket, prefix: prefix, client: client}, nil
}

// sdkHTTPClient returns c for the SDK. When c's transport is an
// *http.Transport (the shared client's is), the result is an SDK
// BuildableClient with a copy of that transport's settings (proxies, roots,
// timeouts, no compression): only such a client lets the SDK add
// AWS_CA_BUNDLE (or the shared config's ca_bundle) to the trusted roots;
// with a plain *http.Client the SDK refuses any CA bundle. Any other
// transport (a test's) is used as it is.
func sdkHTTPClient(c *http.Client) config.HTTPClient {
	tr, ok := c.Transport.(*http.Transport)
	if c.Transport == nil {
		tr, ok = http.DefaultTransport.(*http.Transport)
	}
	if !ok {
		return c
	}
	base := tr.Clone()
	return awshttp.NewBuildableClient().WithTimeout(c.Timeout).WithTransportOptions(func(t *http.Transport) {
		t.Proxy = base.Proxy
		t.OnProxyConnectResponse = base.OnProxyConnectResponse
		t.DialContext = base.DialContext
		t.DialTLSContext = base.DialTLSContext
		t.TLSClientConfig = base.TLSClientConfig
		t.TLSHandshakeTimeout = base.TLSHandshakeTimeout
		t.DisableKeepAlives = base.DisableKeepAlives
		t.DisableCompression = base.DisableCompression
		t.MaxIdleConns = base.MaxIdleConns
		t.MaxIdleConnsPerHost = base.MaxIdleConnsPerHost
		t.MaxConnsPerHost = base.MaxConnsPerHost
		t.IdleConnTimeout = base.IdleConnTimeout
		t.ResponseHeaderTimeout = base.ResponseHeaderTimeout
		t.ExpectContinueTimeout = base.ExpectContinueTimeout
		t.ProxyConnectHeader = base.ProxyConnectHeader
		t.MaxResponseHeaderBytes = base.MaxResponseHeaderBytes
		t.WriteBufferSize = base.WriteBufferSize
		t.ReadBufferSize = base.ReadBufferSize
		t.ForceAttemptHTTP2 = base.ForceAttemptHTTP2
	})
}

func firstEnv(getenv func(string) string, names ...string) string {
	for _, n := range names {
		if v := getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// isLocalHost says host (no port) is an IP literal or localhost: endpoints
// that cannot have bucket subdomains.
func isLocalHost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return net.ParseIP(h) != nil || h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// object is one listed object before it becomes a File.
type object struct {
	key  string
	path string
	size int64
	etag string
	// Filled by HEAD: hex digests.
	sha256, crc64nvme, crc32c, md5 string
}

// List lists the model (see the package doc for prefixes, digests and the
// revision). Errors: a missing bucket, or a prefix with no objects, is
// KindNotFound; refused credentials KindAuth; throttling and 5xx retryable
// KindNetwork; an unsafe key KindIntegrity.
func (s *Source) List(ctx context.Context) (*modelload.Listing, error) {
	var objs []object
	var err error
	if s.prefix == "" {
		objs, err = s.listDir(ctx, "")
	} else {
		dir := strings.TrimSuffix(s.prefix, "/") + "/"
		objs, err = s.listDir(ctx, dir)
		if err == nil && len(objs) == 0 && !strings.HasSuffix(s.prefix, "/") {
			objs, err = s.single(ctx)
		}
	}
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		if s.prefix == "" {
			return nil, modelload.Errorf(modelload.KindNotFound, "%s: bucket %q has no objects", s.uri, s.bucket)
		}
		return nil, modelload.Errorf(modelload.KindNotFound, "%s: no object %q and no objects under %q in bucket %q",
			s.uri, s.prefix, strings.TrimSuffix(s.prefix, "/")+"/", s.bucket)
	}
	if len(objs) <= HeadLimit {
		if err := s.headAll(ctx, objs); err != nil {
			return nil, err
		}
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].path < objs[j].path })
	l := &modelload.Listing{Files: make([]modelload.File, len(objs))}
	var lines strings.Builder
	for i, ob := range objs {
		if i > 0 && ob.path == objs[i-1].path {
			return nil, modelload.Errorf(modelload.KindIntegrity, "%s: keys %q and %q are the same file %q",
				s.uri, objs[i-1].key, ob.key, ob.path)
		}
		l.Files[i] = modelload.File{Path: ob.path, Size: ob.size, SHA256: ob.sha256, CRC64NVME: ob.crc64nvme, CRC32C: ob.crc32c,
			MD5: ob.md5, Version: ob.etag, Key: ob.key}
		fmt.Fprintf(&lines, "%s\t%d\t%s\n", ob.path, ob.size, ob.etag)
	}
	l.Revision = "sha256:" + sha256Hex(lines.String())
	return l, nil
}

// listDir lists every object whose key starts with dir, paths relative to
// dir; directory markers are skipped.
func (s *Source) listDir(ctx context.Context, dir string) ([]object, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)}
	if dir != "" {
		in.Prefix = aws.String(dir)
	}
	if s.pageSize > 0 {
		in.MaxKeys = aws.Int32(s.pageSize)
	}
	var objs []object
	pages := s3.NewListObjectsV2Paginator(s.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, s.classify("list", dir, err)
		}
		for _, c := range page.Contents {
			key := aws.ToString(c.Key)
			if strings.HasSuffix(key, "/") {
				continue
			}
			p, err := modelload.CleanPath(strings.TrimPrefix(key, dir))
			if err != nil {
				return nil, modelload.Errorf(modelload.KindIntegrity, "%s: refusing object key %q: %v", s.uri, key, err)
			}
			objs = append(objs, object{key: key, path: p, size: aws.ToInt64(c.Size), etag: aws.ToString(c.ETag)})
		}
	}
	return objs, nil
}

// single returns the object whose key is exactly the prefix, or none.
func (s *Source) single(ctx context.Context) ([]object, error) {
	ob := object{key: s.prefix}
	found, err := s.head(ctx, &ob)
	if err != nil || !found {
		return nil, err
	}
	p, err := modelload.CleanPath(path.Base(s.prefix))
	if err != nil {
		return nil, modelload.Errorf(modelload.KindIntegrity, "%s: refusing object key %q: %v", s.uri, s.prefix, err)
	}
	ob.path = p
	return []object{ob}, nil
}

// headAll HEADs every object, HeadConcurrency at once.
func (s *Source) headAll(ctx context.Context, objs []object) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(HeadConcurrency)
	for i := range objs {
		g.Go(func() error {
			found, err := s.head(gctx, &objs[i])
			if err == nil && !found {
				err = modelload.Errorf(modelload.KindNotFound, "%s: object %q was deleted while listing", s.uri, objs[i].key)
			}
			return err
		})
	}
	return g.Wait()
}

// head fills ob's size, ETag and digests from a HEAD; found is false when
// the object does not exist.
func (s *Source) head(ctx context.Context, ob *object) (found bool, err error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket:       aws.String(s.bucket),
		Key:          aws.String(ob.key),
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		if statusOf(err) == http.StatusNotFound && !isCode(err, "NoSuchBucket") {
			return false, nil
		}
		return false, s.classify("HEAD", ob.key, err)
	}
	if out.ContentLength != nil {
		ob.size = *out.ContentLength
	}
	if e := aws.ToString(out.ETag); e != "" {
		ob.etag = e
	}
	ob.sha256 = fullObjectChecksum(aws.ToString(out.ChecksumSHA256), 32, out.ChecksumType, ob.etag)
	ob.crc64nvme = fullObjectChecksum(aws.ToString(out.ChecksumCRC64NVME), 8, out.ChecksumType, ob.etag)
	ob.crc32c = fullObjectChecksum(aws.ToString(out.ChecksumCRC32C), 4, out.ChecksumType, ob.etag)
	ob.md5 = etagMD5(ob.etag, out.ServerSideEncryption, aws.ToString(out.SSECustomerAlgorithm))
	return true, nil
}

// fullObjectChecksum returns the hex of one of S3's checksums (base64 of
// size bytes: ChecksumSHA256, ChecksumCRC64NVME, ...), or "" when it is
// absent, malformed or composite: it counts when its type is FULL_OBJECT,
// or when no type is given and the object is a single-part upload (its
// ETag has no "-N"), whose checksum can only be of the whole object.
func fullObjectChecksum(sum string, size int, typ types.ChecksumType, etag string) string {
	if sum == "" || strings.Contains(sum, "-") {
		return ""
	}
	switch {
	case typ == types.ChecksumTypeFullObject:
	case typ == "" && !strings.Contains(etag, "-"):
	default:
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(sum)
	if err != nil || len(b) != size {
		return ""
	}
	return hex.EncodeToString(b)
}

// etagMD5 returns the ETag as a hex MD5 when S3 guarantees it is one: a
// single-part upload (32 hex digits, no "-N") that is unencrypted or SSE-S3
// encrypted, not SSE-KMS, DSSE-KMS or SSE-C.
func etagMD5(etag string, sse types.ServerSideEncryption, sseC string) string {
	e := strings.ToLower(strings.Trim(etag, `"`))
	if len(e) != 32 || sseC != "" || (sse != "" && sse != types.ServerSideEncryptionAes256) {
		return ""
	}
	if _, err := hex.DecodeString(e); err != nil {
		return ""
	}
	return e
}

// Open returns bytes [off, off+n) of f ([off, end) when n < 0) with one
// GetObject carrying Range and If-Match f.Version. The SDK does not retry
// it: a throttled or 5xx answer is returned as a retryable *modelload.Error
// (with Retry-After when S3 sent one) for the engine's backoff. A changed
// object is KindIntegrity.
func (s *Source) Open(ctx context.Context, f modelload.File, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(f.Key)}
	if f.Version != "" {
		in.IfMatch = aws.String(f.Version)
	}
	switch {
	case n > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	case off > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
	}
	out, err := s.client.GetObject(ctx, in, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return nil, s.classify("GET", f.Key, err)
	}
	if n > 0 && out.ContentLength != nil && *out.ContentLength != n {
		out.Body.Close()
		return nil, modelload.Errorf(modelload.KindIntegrity, "GET %s: asked for %d bytes at %d, S3 sent %d (object changed during download?)",
			s.objURI(f.Key), n, off, *out.ContentLength)
	}
	return out.Body, nil
}

func (s *Source) objURI(key string) string {
	return modelload.RedactURI("s3://" + s.bucket + "/" + key)
}

// Error codes by what they mean. S3's own and those of S3-compatible stores.
var (
	authCodes = map[string]string{
		"AccessDenied":          "the credentials are not allowed to do this (s3:ListBucket on the bucket and s3:GetObject on its objects are needed)",
		"Forbidden":             "the credentials are not allowed to do this (s3:GetObject on the object is needed)",
		"InvalidAccessKeyId":    "the access key id is not known to S3 (check AWS_ACCESS_KEY_ID in the Secret)",
		"SignatureDoesNotMatch": "the secret access key does not match the access key id (check AWS_SECRET_ACCESS_KEY in the Secret)",
		"ExpiredToken":          "the session token has expired (AWS_SESSION_TOKEN, or the web identity token)",
		"TokenRefreshRequired":  "the session token must be refreshed",
		"InvalidToken":          "the session token is malformed or invalid (AWS_SESSION_TOKEN)",
		"AllAccessDisabled":     "all access to this object has been disabled",
		"AccountProblem":        "the AWS account has a problem that blocks access",
		"RequestTimeTooSkewed":  "the node's clock is too far from S3's for request signatures",
		"InvalidSecurity":       "the security credentials are invalid",
	}
	retryCodes = map[string]bool{
		"SlowDown": true, "Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
		"TooManyRequests": true, "RequestThrottled": true, "InternalError": true, "ServiceUnavailable": true,
		"RequestTimeout": true, "OperationAborted": true,
	}
)

func statusOf(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isCode(err error, code string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == code
}

// classify turns an SDK error of op on key into a *modelload.Error whose
// message names the operation and the redacted URI, the S3 error code and
// what it likely means, and never a credential.
func (s *Source) classify(op, key string, err error) error {
	what := op + " " + s.objURI(key)
	var (
		status int
		header http.Header
		code   string
		smsg   string
	)
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
		if re.Response != nil && re.Response.Response != nil {
			header = re.Response.Header
		}
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, smsg = ae.ErrorCode(), ae.ErrorMessage()
	}
	detail := code
	if status != 0 {
		detail = fmt.Sprintf("HTTP %d %s", status, code)
	}
	if smsg != "" {
		detail += ": " + smsg
	}
	mk := func(k modelload.Kind, format string, args ...any) *modelload.Error {
		return &modelload.Error{Kind: k, Err: &opError{msg: fmt.Sprintf(format, args...), err: err}}
	}
	switch {
	case code == "NoSuchBucket":
		return mk(modelload.KindNotFound, "%s: bucket %q does not exist (%s)", what, s.bucket, detail)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return mk(modelload.KindNotFound, "%s: no such object in bucket %q (%s)", what, s.bucket, detail)
	case authCodes[code] != "":
		return mk(modelload.KindAuth, "%s: S3 refused the request: %s (%s)", what, authCodes[code], detail)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return mk(modelload.KindAuth, "%s: S3 refused the request: access denied (%s)", what, detail)
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || code == "IllegalLocationConstraintException" ||
		status == http.StatusMovedPermanently:
		region := header.Get("X-Amz-Bucket-Region")
		if region == "" {
			region = "another region"
		}
		return mk(modelload.KindUsage, "%s: bucket %q is in %s, not the client's; set AWS_REGION (%s)", what, s.bucket, region, detail)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return mk(modelload.KindIntegrity, "%s: object changed during download: its ETag is no longer the listed one (%s)", what, detail)
	case code == "InvalidRange" || status == http.StatusRequestedRangeNotSatisfiable:
		return mk(modelload.KindIntegrity, "%s: range not satisfiable: the object changed size during download (%s)", what, detail)
	case retryCodes[code] || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		e := mk(modelload.KindNetwork, "%s: S3 is throttling or failing (%s)", what, detail)
		e.Retry = true
		e.RetryAfter = modelload.RetryAfter(header, time.Now())
		return e
	case status == 0 && isCredentialsError(err):
		return mk(modelload.KindAuth, "%s: no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity (IRSA) (%v)", what, err)
	case status != 0:
		return mk(modelload.KindInternal, "%s: %s", what, detail)
	}
	c := modelload.Classify(err)
	return &modelload.Error{Kind: c.Kind, Retry: c.Retry, RetryAfter: c.RetryAfter, Err: &opError{msg: what + ": " + err.Error(), err: err}}
}

// isCredentialsError says err is the SDK failing to get credentials before
// sending a request (the error is not typed; these are its fixed words).
func isCredentialsError(err error) bool {
	m := err.Error()
	return strings.Contains(m, "get identity") || strings.Contains(m, "failed to retrieve credentials") ||
		strings.Contains(m, "failed to refresh cached credentials")
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// opError is a message of this package's own words that still unwraps to
// the SDK's error.
type opError struct {
	msg string
	err error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() error { return e.err }
