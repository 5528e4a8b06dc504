// Package oci is the model source of OCI registries:
//
//	oci://REGISTRY/REPOSITORY:TAG
//	oci://REGISTRY/REPOSITORY@sha256:DIGEST
//
// The model is an OCI artifact (or image manifest) whose layers are the
// model's files, one file per layer, each named by its
// org.opencontainers.image.title annotation, as `oras push REF file...`
// and ModelPack's raw layers (`modctl build --raw`) make them, and as
// ocipush.Push makes them. ModelPack's org.cncf.model.filepath annotation,
// when present, wins over the title. The tag or digest is required (the
// webhook refuses a reference without one, as here).
//
// # What is refused (KindUsage)
//
//   - a container image ("modelcar": the model in /models of an image's
//     tar layers, which carry no title): mount it with an image volume
//     (the webhook's default ociMode, ImageVolume) or push the files as
//     an artifact;
//   - a directory pushed by `oras push REF DIR` (one tar.gz layer marked
//     io.deis.oras.content.unpack): push the files instead;
//   - ModelPack layers packed as tar archives (media types
//     application/vnd.cncf.model.*.tar, +gzip, +zstd): pack raw layers.
//
// For an image index the linux/amd64 manifest is used, or the first one.
//
// # Listing
//
// Listing.Revision is the digest the reference resolves to (the index's
// when the reference names an index). Each File has the layer's Size, its
// SHA256 (the layer digest; the engine checks it) and Key (the digest).
//
// # Reads
//
// Open sends its own GET /v2/REPOSITORY/blobs/DIGEST with a closed Range
// header through oras's auth client (which answers the registry's Basic or
// Bearer challenge and caches the token), and follows the registry's
// redirect to its storage, as every major registry serves blobs. It does not
// use oras's Blobs().Fetch: that opens the whole blob first and seeks with a
// second request, and only for registries that send Accept-Ranges. A
// registry that answers a ranged request with the whole blob cannot serve an
// offset; Open then fails without retry.
//
// # Credentials
//
// OCI_USERNAME and OCI_PASSWORD (both, or neither), for the URI's registry
// only; otherwise the Docker config file $DOCKER_CONFIG/config.json, or
// $HOME/.docker/config.json (the format of a kubernetes.io/dockerconfigjson
// Secret: mount the Secret as a directory and point DOCKER_CONFIG at it),
// with its credential helpers, through oras's credentials package;
// otherwise anonymous (public repositories, anonymous bearer tokens).
//
// Registries on localhost, 127.0.0.1 and ::1 are spoken to over plain HTTP,
// as by containerd and oras; SourceOptions.OCIPlainHTTP makes every
// registry plain HTTP.
//
// Import this package for its side effect (modelload.NewSource accepts the
// scheme): import _ "github.com/mlplane/mlplane/internal/modelload/oci".
package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Scheme is the URI scheme of this source.
const Scheme = "oci"

func init() {
	modelload.Register(Scheme, New)
}

// The environment variables this source reads.
const (
	EnvUsername     = "OCI_USERNAME"
	EnvPassword     = "OCI_PASSWORD"
	EnvDockerConfig = "DOCKER_CONFIG"
)

// Annotations and media types the listing reads.
const (
	// AnnotationFilepath is ModelPack's layer file path.
	AnnotationFilepath = "org.cncf.model.filepath"
	// annotationUnpack marks an `oras push DIR` directory tarball.
	annotationUnpack = "io.deis.oras.content.unpack"

	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// userAgent is sent with every request.
const userAgent = "mlplane-model-loader"

// Source is a model in an OCI registry. Safe for concurrent use.
type Source struct {
	ref     registry.Reference
	repo    *remote.Repository
	client  *auth.Client
	plain   bool
	display string // oci://REGISTRY/REPOSITORY:TAG
	creds   string // which credentials, for messages
}

// New makes the Source of uri (the modelload.Factory of "oci"). It does not
// contact the registry. Errors: KindUsage for a malformed reference, one of
// OCI_USERNAME and OCI_PASSWORD without the other, or an unreadable Docker
// config file.
func New(ctx context.Context, uri string, o modelload.SourceOptions) (modelload.Source, error) {
	o.Defaults()
	const form = "want oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST"
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: %s", modelload.RedactURI(uri), form)
	}
	ref, err := registry.ParseReference(rest)
	if err != nil {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: %v; %s", modelload.RedactURI(uri), err, form)
	}
	if ref.Reference == "" {
		return nil, modelload.Errorf(modelload.KindUsage, "model URI %q: no tag or digest; %s", modelload.RedactURI(uri), form)
	}
	s := &Source{ref: ref, plain: o.OCIPlainHTTP || modelload.IsLoopbackHost(ref.Registry), display: Scheme + "://" + ref.String()}

	var cred auth.CredentialFunc
	user, pass := o.Getenv(EnvUsername), o.Getenv(EnvPassword)
	switch {
	case user != "" && pass != "":
		cred = auth.StaticCredential(ref.Registry, auth.Credential{Username: user, Password: pass})
		s.creds = EnvUsername + " and " + EnvPassword
	case user != "" || pass != "":
		return nil, modelload.Errorf(modelload.KindUsage, "%s: set both %s and %s, or neither", s.display, EnvUsername, EnvPassword)
	default:
		file := ""
		if d := o.Getenv(EnvDockerConfig); d != "" {
			file = filepath.Join(d, "config.json")
		} else if h := o.Getenv("HOME"); h != "" {
			file = filepath.Join(h, ".docker", "config.json")
		}
		if file != "" {
			if _, err := os.Stat(file); err == nil {
				store, err := credentials.NewStore(file, credentials.StoreOptions{})
				if err != nil {
					return nil, modelload.Errorf(modelload.KindUsage, "%s: Docker config %s: %v", s.display, file, err)
				}
				cred = credentials.Credential(store)
				s.creds = "the Docker config " + file
			}
		}
		if cred == nil {
			s.creds = "none: anonymous; set " + EnvUsername + " and " + EnvPassword + ", or " + EnvDockerConfig
		}
	}
	s.client = &auth.Client{
		Client:     o.HTTPClient,
		Cache:      auth.NewCache(),
		Credential: cred,
		Header:     http.Header{"User-Agent": {userAgent}},
	}
	s.repo = &remote.Repository{Client: s.client, Reference: ref, PlainHTTP: s.plain}
	return s, nil
}

// String is the model's location.
func (s *Source) String() string { return s.display }

// manifest is an image manifest or index, read leniently: registries send
// OCI and Docker media types, some without mediaType in the body.
type manifest struct {
	MediaType string               `json:"mediaType"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Layers    []ocispec.Descriptor `json:"layers"`
}

// List resolves the reference and lists the manifest's titled layers (see
// the package documentation). Errors: KindNotFound for a missing repository,
// tag or digest; KindAuth for missing or refused credentials (HTTP 401/403,
// DENIED, UNAUTHORIZED); KindUsage for a container image, an `oras push DIR`
// directory, archived ModelPack layers or an unknown manifest type;
// KindIntegrity for a title that is not a safe relative path; 5xx and 429
// are retryable.
func (s *Source) List(ctx context.Context) (*modelload.Listing, error) {
	desc, rc, err := s.repo.FetchReference(ctx, s.ref.Reference)
	if err != nil {
		return nil, s.fail(err, "GET manifest "+s.display)
	}
	b, err := content.ReadAll(rc, desc)
	rc.Close()
	if err != nil {
		return nil, s.fail(err, "GET manifest "+s.display)
	}
	lst := &modelload.Listing{Revision: desc.Digest.String()}
	m, err := s.parse(b, desc.MediaType)
	if err != nil {
		return nil, err
	}
	if isIndex(m, desc.MediaType) {
		pick, err := s.pick(m)
		if err != nil {
			return nil, err
		}
		rc, err := s.repo.Manifests().Fetch(ctx, pick)
		if err != nil {
			return nil, s.fail(err, "GET manifest "+s.display+"@"+pick.Digest.String())
		}
		b, err = content.ReadAll(rc, pick)
		rc.Close()
		if err != nil {
			return nil, s.fail(err, "GET manifest "+s.display+"@"+pick.Digest.String())
		}
		if m, err = s.parse(b, pick.MediaType); err != nil {
			return nil, err
		}
		if isIndex(m, pick.MediaType) {
			return nil, modelload.Errorf(modelload.KindUsage, "%s: the index's manifest %s is an index too", s.display, pick.Digest)
		}
	}
	for _, l := range m.Layers {
		f, err := s.file(l)
		if err != nil {
			return nil, err
		}
		lst.Files = append(lst.Files, f)
	}
	return lst, nil
}

func (s *Source) parse(b []byte, mediaType string) (*manifest, error) {
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, modelload.Errorf(modelload.KindIntegrity, "%s: manifest (%s) is not JSON: %v", s.display, mediaType, err)
	}
	switch mediaType {
	case "", ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, mediaTypeDockerManifest, mediaTypeDockerList:
		return &m, nil
	}
	return nil, modelload.Errorf(modelload.KindUsage, "%s: unsupported manifest media type %q; want an OCI image manifest or index", s.display, mediaType)
}

func isIndex(m *manifest, mediaType string) bool {
	switch mediaType {
	case ocispec.MediaTypeImageIndex, mediaTypeDockerList:
		return true
	case "":
		return m.MediaType == ocispec.MediaTypeImageIndex || m.MediaType == mediaTypeDockerList || (len(m.Manifests) > 0 && len(m.Layers) == 0)
	}
	return false
}

// pick chooses the index's linux/amd64 manifest, or its first.
func (s *Source) pick(m *manifest) (ocispec.Descriptor, error) {
	if len(m.Manifests) == 0 {
		return ocispec.Descriptor{}, modelload.Errorf(modelload.KindNotFound, "%s: the image index lists no manifests", s.display)
	}
	for _, d := range m.Manifests {
		if p := d.Platform; p != nil && p.OS == "linux" && p.Architecture == "amd64" {
			return d, nil
		}
	}
	return m.Manifests[0], nil
}

// file is the File of one layer, or why the layer cannot be one.
func (s *Source) file(l ocispec.Descriptor) (modelload.File, error) {
	name := l.Annotations[AnnotationFilepath]
	if name == "" {
		name = l.Annotations[ocispec.AnnotationTitle]
	}
	switch {
	case name == "" && isImageLayer(l.MediaType):
		return modelload.File{}, modelload.Errorf(modelload.KindUsage,
			"%s is a container image (layer %s of type %s has no %s annotation), not a model artifact: mount it with an image volume (the webhook's default ociMode), or push the model's files as an artifact with one titled layer per file (oras push REF FILE...)",
			s.display, l.Digest, l.MediaType, ocispec.AnnotationTitle)
	case name == "":
		return modelload.File{}, modelload.Errorf(modelload.KindUsage,
			"%s: layer %s (%s) has no %s annotation, so it names no file; push one titled layer per file (oras push REF FILE...)",
			s.display, l.Digest, l.MediaType, ocispec.AnnotationTitle)
	case strings.EqualFold(l.Annotations[annotationUnpack], "true"):
		return modelload.File{}, modelload.Errorf(modelload.KindUsage,
			"%s: layer %q is a directory packed by `oras push REF DIR` (a tarball to unpack); push the directory's files instead (cd DIR && oras push REF FILE...)",
			s.display, name)
	case isModelPackArchive(l.MediaType):
		return modelload.File{}, modelload.Errorf(modelload.KindUsage,
			"%s: layer %q is a ModelPack archive (%s); the loader reads raw layers: pack the model with raw media types (modctl build --raw), or mount it with an image volume",
			s.display, name, l.MediaType)
	}
	p, err := modelload.CleanPath(name)
	if err != nil {
		return modelload.File{}, modelload.Errorf(modelload.KindIntegrity, "%s: layer %s: %w", s.display, l.Digest, err)
	}
	if err := l.Digest.Validate(); err != nil {
		return modelload.File{}, modelload.Errorf(modelload.KindIntegrity, "%s: layer %q: digest %q: %v", s.display, name, l.Digest, err)
	}
	if l.Size < 0 {
		return modelload.File{}, modelload.Errorf(modelload.KindIntegrity, "%s: layer %q: size %d", s.display, name, l.Size)
	}
	f := modelload.File{Path: p, Size: l.Size, Key: l.Digest.String()}
	if l.Digest.Algorithm() == digest.SHA256 {
		f.SHA256 = l.Digest.Encoded()
	}
	return f, nil
}

// isImageLayer says a media type is a container image's filesystem layer.
func isImageLayer(mt string) bool {
	return strings.HasPrefix(mt, "application/vnd.oci.image.layer.") ||
		strings.HasPrefix(mt, "application/vnd.docker.image.rootfs.")
}

// isModelPackArchive says a media type is a ModelPack tar layer.
func isModelPackArchive(mt string) bool {
	return (strings.HasPrefix(mt, "application/vnd.cncf.model.") || strings.HasPrefix(mt, "application/vnd.cnai.model.")) &&
		strings.Contains(mt, ".tar")
}

// Open reads bytes [off, off+n) of the layer f.Key (to the end when n < 0)
// with one GET carrying a closed Range header (none for the whole blob).
// Errors: as List; a registry that ignores the Range header is a
// non-retryable KindNetwork error when off > 0; a Content-Range that starts
// elsewhere is KindIntegrity.
func (s *Source) Open(ctx context.Context, f modelload.File, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	d, err := digest.Parse(f.Key)
	if err != nil {
		return nil, modelload.Errorf(modelload.KindInternal, "%s: file %s: key %q is not a digest", s.display, f.Path, f.Key)
	}
	scheme := "https"
	if s.plain {
		scheme = "http"
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, s.ref.Host(), s.ref.Repository, d)
	what := fmt.Sprintf("GET %s@%s (%s)", s.display, d, f.Path)
	req, err := http.NewRequestWithContext(auth.AppendRepositoryScope(ctx, s.ref, auth.ActionPull), http.MethodGet, u, nil)
	if err != nil {
		return nil, modelload.Errorf(modelload.KindInternal, "%s: %w", what, err)
	}
	whole := off == 0 && (n < 0 || (f.Size >= 0 && n >= f.Size))
	if !whole {
		switch {
		case n > 0:
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
		case f.Size > 0:
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, f.Size-1))
		default:
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		}
		what += " " + req.Header.Get("Range")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, s.fail(err, what)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); ok && start != off {
			resp.Body.Close()
			return nil, modelload.Errorf(modelload.KindIntegrity, "%s: the registry sent Content-Range %q", what, resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		if off > 0 {
			resp.Body.Close()
			return nil, modelload.Errorf(modelload.KindNetwork, "%s: the registry ignored the Range header (HTTP 200): it cannot serve a blob in parallel ranges", what)
		}
	default:
		defer resp.Body.Close()
		return nil, s.httpFail(resp, what)
	}
	if n > 0 {
		return limited{io.LimitReader(resp.Body, n), resp.Body}, nil
	}
	return resp.Body, nil
}

type limited struct {
	io.Reader
	io.Closer
}

// rangeStart reads the first byte position of "bytes START-END/SIZE".
func rangeStart(cr string) (int64, bool) {
	r, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, false
	}
	a, _, ok := strings.Cut(r, "-")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(a, 10, 64)
	return v, err == nil
}

// httpFail classifies a registry's error response (its body holds the
// distribution spec's error codes).
func (s *Source) httpFail(resp *http.Response, what string) error {
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(b, &body)
	detail := ""
	if len(body.Errors) > 0 {
		detail = body.Errors.Error()
	}
	e := modelload.HTTPError(resp, what, detail)
	s.refine(e, body.Errors)
	return e
}

// refine adjusts e's kind by the registry's error codes, and says which
// credentials were used when access was refused.
func (s *Source) refine(e *modelload.Error, errs errcode.Errors) {
	for _, c := range errs {
		switch c.Code {
		case errcode.ErrorCodeNameUnknown, errcode.ErrorCodeManifestUnknown, errcode.ErrorCodeBlobUnknown:
			e.Kind, e.Retry = modelload.KindNotFound, false
		case errcode.ErrorCodeUnauthorized, errcode.ErrorCodeDenied:
			e.Kind, e.Retry = modelload.KindAuth, false
		}
	}
	if e.Kind == modelload.KindAuth {
		e.Err = fmt.Errorf("%w (credentials: %s)", e.Err, s.creds)
	}
}

// fail classifies an oras error.
func (s *Source) fail(err error, what string) error {
	var e *modelload.Error
	var re *errcode.ErrorResponse
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &re):
		detail := ""
		if len(re.Errors) > 0 {
			detail = re.Errors.Error()
		}
		e = modelload.HTTPError(&http.Response{StatusCode: re.StatusCode, Status: fmt.Sprintf("%d %s", re.StatusCode, http.StatusText(re.StatusCode))}, what, detail)
		s.refine(e, re.Errors)
		return e
	case errors.Is(err, errdef.ErrNotFound):
		return modelload.Errorf(modelload.KindNotFound, "%s: not found (%v)", what, err)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return modelload.Errorf(modelload.KindAuth, "%s: the registry asks for a user name and password (credentials: %s)", what, s.creds)
	case errors.Is(err, content.ErrMismatchedDigest), errors.Is(err, content.ErrTrailingData):
		return &modelload.Error{Kind: modelload.KindIntegrity, Retry: true, Err: fmt.Errorf("%s: %w", what, err)}
	}
	c := modelload.Classify(err)
	return &modelload.Error{Kind: c.Kind, Retry: c.Retry, RetryAfter: c.RetryAfter, Err: fmt.Errorf("%s: %w", what, err)}
}
