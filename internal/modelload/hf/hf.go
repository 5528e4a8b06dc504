// Package hf is the model loader's Source for Hugging Face Hub repositories,
// URI scheme "hf": hf://ORG/MODEL[@REVISION] or hf://MODEL (hub repositories
// without an organisation, such as "gpt2"). REVISION is a branch, a tag or a
// commit sha, "main" by default; a revision with slashes ("refs/pr/1") is
// written as it is.
//
// It is a small client of the hub's HTTP API, the calls huggingface_hub
// itself makes (hf_api.model_info, file_download.hf_hub_download and
// get_hf_file_metadata, utils/_http.hf_raise_for_status):
//
//   - List: GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true. The
//     commit "sha" is Listing.Revision; each of "siblings" is a File: its
//     rfilename the Path, size the Size, lfs.sha256 the SHA256 (LFS files
//     only), blobId the Version, the commit sha the Key. A sibling without a
//     size (a mirror that ignores blobs=true) is sized by a HEAD of its
//     resolve URL, not following the redirect to the CDN: X-Linked-Size
//     (and X-Linked-Etag, the LFS sha256) on a redirect, Content-Length on
//     a direct answer. A gated repository's model info is public, so List
//     also HEADs one file of a gated repository to fail early, with the
//     gated message, when the token has no access.
//   - Open: GET {endpoint}/{repo}/resolve/{commit}/{path} with a Range
//     header. The hub answers regular files itself and redirects LFS files
//     (302) to a CDN host, and renamed repositories (307) to their new
//     name; the client follows both. Every byte of one load comes from the
//     listed commit, so ranges of one file cannot mix versions.
//
// The endpoint is HF_ENDPOINT (default https://huggingface.co; a mirror may
// have a path prefix), the token HF_TOKEN or, if unset, the legacy
// HUGGING_FACE_HUB_TOKEN, both read through SourceOptions.Getenv. The token
// is sent as "Authorization: Bearer" to the endpoint's host only: the shared
// client (modelload.NewHTTPClient) drops it on a redirect to another host
// such as the CDN, and this package never sends it over plain http to a
// host that is not loopback, nor follows a redirect from https to plain
// http. The token never appears in an error or a log.
//
// Errors follow the hub's X-Error-Code header: 401 without a token is
// KindAuth "repository not found, or it is private or gated: set HF_TOKEN
// ..." (the hub answers 401 for missing, private and gated repositories
// alike when no token is sent); GatedRepo is KindAuth with the gated
// message (401: no token; 403: the token's account was not granted
// access); a refused token is KindAuth; RepoNotFound, RevisionNotFound and
// EntryNotFound (404) are KindNotFound naming the repository, revision or
// file; 429 and 5xx are retryable with the server's Retry-After
// (modelload.HTTPError). A 403 from the CDN (an expired or refused link) is
// retryable: the next Open resolves a fresh link.
package hf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Scheme is the URI scheme of this source.
const Scheme = "hf"

// DefaultEndpoint is the hub's endpoint when HF_ENDPOINT is unset.
const DefaultEndpoint = "https://huggingface.co"

func init() { modelload.Register(Scheme, New) }

const usage = "want hf://ORG/MODEL[@REVISION] or hf://MODEL[@REVISION]"

// ParseURI splits an hf:// URI into the repository id ("org/model" or
// "model") and the revision ("main" when absent). Names follow the hub's
// rules (huggingface_hub.utils.validate_repo_id): letters, digits, ".", "_"
// and "-", at most 96 characters, no "--" or "..", not starting or ending
// with "-" or ".". A malformed URI is a modelload.KindUsage error.
func ParseURI(uri string) (repo, revision string, err error) {
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok {
		return "", "", modelload.Errorf(modelload.KindUsage, "model URI %q: %s", modelload.RedactURI(uri), usage)
	}
	repo, revision, hasRev := strings.Cut(rest, "@")
	if hasRev && revision == "" {
		return "", "", modelload.Errorf(modelload.KindUsage, "model URI %q: empty revision after \"@\"; %s", uri, usage)
	}
	if !hasRev {
		revision = "main"
	}
	if strings.ContainsAny(revision, "?#\x00") || strings.Contains(revision, "..") {
		return "", "", modelload.Errorf(modelload.KindUsage, "model URI %q: invalid revision %q; %s", uri, revision, usage)
	}
	parts := strings.Split(repo, "/")
	if len(parts) > 2 {
		return "", "", modelload.Errorf(modelload.KindUsage, "model URI %q: %q is not a repository id (a model is ORG/MODEL or MODEL; the hf scheme loads whole repositories, use allow patterns for a subdirectory); %s", uri, repo, usage)
	}
	for _, p := range parts {
		if !validName(p) {
			return "", "", modelload.Errorf(modelload.KindUsage, "model URI %q: invalid repository id %q: names are letters, digits, \".\", \"_\" and \"-\", at most 96 characters, without \"--\" or \"..\"; %s", uri, repo, usage)
		}
	}
	return repo, revision, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 96 || strings.Contains(s, "--") || strings.Contains(s, "..") ||
		strings.HasPrefix(s, "-") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, "-") || strings.HasSuffix(s, ".") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

type source struct {
	name     string // "hf://org/model", for messages
	repo     string
	rev      string
	endpoint string // scheme://host[/prefix], no trailing slash
	host     string // the endpoint's host:port, the only one the token goes to
	token    string
	client   *http.Client // follows every redirect
	meta     *http.Client // follows redirects within the endpoint's host only
}

// New is the Factory of the hf scheme (see the package documentation). It
// makes no request. o.Getenv and o.HTTPClient default as in
// modelload.NewSource.
func New(_ context.Context, uri string, o modelload.SourceOptions) (modelload.Source, error) {
	repo, rev, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	client := o.HTTPClient
	if client == nil {
		client = modelload.NewHTTPClient(nil)
	}
	ep := strings.TrimRight(strings.TrimSpace(getenv("HF_ENDPOINT")), "/")
	if ep == "" {
		ep = DefaultEndpoint
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return nil, modelload.Errorf(modelload.KindUsage, "HF_ENDPOINT %q: want an http(s) URL such as %s", modelload.RedactURI(ep), DefaultEndpoint)
	}
	token := strings.TrimSpace(getenv("HF_TOKEN"))
	if token == "" {
		token = strings.TrimSpace(getenv("HUGGING_FACE_HUB_TOKEN"))
	}
	if token != "" && u.Scheme == "http" && !modelload.IsLoopbackHost(u.Hostname()) {
		return nil, modelload.Errorf(modelload.KindUsage, "HF_ENDPOINT %s is plain http: refusing to send HF_TOKEN over it; use https", ep)
	}
	s := &source{
		name:     Scheme + "://" + repo,
		repo:     repo,
		rev:      rev,
		endpoint: ep,
		host:     u.Host,
		token:    token,
	}
	s.client = withRedirectPolicy(client, false)
	s.meta = withRedirectPolicy(client, true)
	return s, nil
}

// withRedirectPolicy returns a copy of c (same transport) that, when
// sameHostOnly, stops at (returns) a redirect to another host, so that a
// HEAD reads the hub's X-Linked-* headers; c's own policy (no Authorization
// across hosts, no https to plain http) applies to the rest.
func withRedirectPolicy(c *http.Client, sameHostOnly bool) *http.Client {
	cc := *c
	orig := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if sameHostOnly && req.URL.Host != via[0].URL.Host {
			return http.ErrUseLastResponse
		}
		if orig != nil {
			return orig(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cc
}

func (s *source) repoPath() string {
	return escapePath(s.repo)
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i := range parts {
		parts[i] = url.PathEscape(parts[i])
	}
	return strings.Join(parts, "/")
}

func (s *source) resolveURL(commit, path string) string {
	return s.endpoint + "/" + s.repoPath() + "/resolve/" + url.PathEscape(commit) + "/" + escapePath(path)
}

// request builds a request; Authorization goes only to the endpoint's host.
func (s *source) request(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, modelload.Errorf(modelload.KindInternal, "%s %s: %w", method, s.name, err)
	}
	req.Header.Set("User-Agent", "mlplane-model-loader")
	// Model files are fetched as they are; a compressed answer would not
	// match the listed size.
	req.Header.Set("Accept-Encoding", "identity")
	if s.token != "" && req.URL.Host == s.host {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	return req, nil
}

// do sends req; a transport failure is classified (retryable when the
// connection failed) with a message naming what, never the URL's query.
func (s *source) do(c *http.Client, req *http.Request, what string) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, modelload.Classify(fmt.Errorf("%s %s: %w", req.Method, what, err))
	}
	return resp, nil
}

type modelInfo struct {
	SHA      string          `json:"sha"`
	Gated    json.RawMessage `json:"gated"`
	Siblings []struct {
		RFilename string `json:"rfilename"`
		BlobID    string `json:"blobId"`
		Size      *int64 `json:"size"`
		LFS       *struct {
			SHA256 string `json:"sha256"`
			Size   *int64 `json:"size"`
		} `json:"lfs"`
	} `json:"siblings"`
}

// maxInfo bounds the model info document (a repository of 100k files is a
// few tens of MB).
const maxInfo = 256 << 20

// List implements modelload.Source.
func (s *source) List(ctx context.Context) (*modelload.Listing, error) {
	what := s.name + "@" + s.rev
	u := s.endpoint + "/api/models/" + s.repoPath() + "/revision/" + url.PathEscape(s.rev) + "?blobs=true"
	req, err := s.request(ctx, http.MethodGet, u)
	if err != nil {
		return nil, err
	}
	resp, err := s.do(s.client, req, what)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, s.hubError(resp, "", s.rev)
	}
	var info modelInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxInfo)).Decode(&info); err != nil {
		return nil, modelload.Classify(fmt.Errorf("GET %s: reading the model info: %w", what, err))
	}
	commit := strings.ToLower(info.SHA)
	if commit == "" && isSHA1(strings.ToLower(s.rev)) {
		commit = strings.ToLower(s.rev)
	}
	if !isSHA1(commit) {
		return nil, modelload.Errorf(modelload.KindInternal, "GET %s: the hub's answer has no commit sha (got %q)", what, info.SHA)
	}
	lst := &modelload.Listing{Revision: commit}
	var unsized []int
	for _, sib := range info.Siblings {
		p, err := modelload.CleanPath(sib.RFilename)
		if err != nil {
			return nil, modelload.Errorf(modelload.KindInternal, "%s at %s: %w", s.name, commit, err)
		}
		f := modelload.File{Path: p, Size: -1, Version: sib.BlobID, Key: commit}
		switch {
		case sib.Size != nil:
			f.Size = *sib.Size
		case sib.LFS != nil && sib.LFS.Size != nil:
			f.Size = *sib.LFS.Size
		}
		if sib.LFS != nil && isSHA256(strings.ToLower(sib.LFS.SHA256)) {
			f.SHA256 = strings.ToLower(sib.LFS.SHA256)
		}
		if f.Size < 0 {
			unsized = append(unsized, len(lst.Files))
		}
		lst.Files = append(lst.Files, f)
	}
	if err := s.sizeFiles(ctx, lst.Files, unsized); err != nil {
		return nil, err
	}
	if gated(info.Gated) && len(lst.Files) > 0 {
		// The model info of a gated repository is public; its files are
		// not. Fail now, with the gated message, rather than in Open.
		if _, err := s.head(ctx, lst.Files[0]); err != nil {
			return nil, err
		}
	}
	return lst, nil
}

func gated(raw json.RawMessage) bool {
	v := strings.TrimSpace(string(raw))
	return v != "" && v != "false" && v != "null"
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isSHA1(s string) bool   { return isHex(s, 40) }
func isSHA256(s string) bool { return isHex(s, 64) }

// sizeFiles HEADs the files at idx (at most 8 at a time) for their sizes.
func (s *source) sizeFiles(ctx context.Context, files []modelload.File, idx []int) error {
	if len(idx) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, 8)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, i := range idx {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			m, err := s.head(ctx, files[i])
			if err != nil {
				once.Do(func() { first = err; cancel() })
				return
			}
			files[i].Size = m.size
			if files[i].SHA256 == "" {
				files[i].SHA256 = m.sha256
			}
		})
	}
	wg.Wait()
	return first
}

type fileMeta struct {
	size   int64
	sha256 string
}

// head reads f's size and LFS sha256 from a HEAD of its resolve URL,
// without following a redirect to another host (as get_hf_file_metadata).
func (s *source) head(ctx context.Context, f modelload.File) (fileMeta, error) {
	commit := f.Key
	if commit == "" {
		commit = s.rev
	}
	req, err := s.request(ctx, http.MethodHead, s.resolveURL(commit, f.Path))
	if err != nil {
		return fileMeta{}, err
	}
	resp, err := s.do(s.meta, req, s.name+"/"+f.Path)
	if err != nil {
		return fileMeta{}, err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fileMeta{}, s.hubError(resp, f.Path, commit)
	}
	m := fileMeta{size: -1}
	if v := resp.Header.Get("X-Linked-Size"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			m.size = n
		}
	} else if resp.StatusCode == http.StatusOK && resp.ContentLength >= 0 {
		m.size = resp.ContentLength
	}
	if e := strings.ToLower(strings.Trim(strings.TrimPrefix(resp.Header.Get("X-Linked-Etag"), "W/"), `"`)); isSHA256(e) {
		m.sha256 = e
	}
	return m, nil
}

// Open implements modelload.Source: bytes [off, off+n) of f (to the end
// when n < 0) at the listed commit (f.Key; the URI's revision when empty).
// A server that ignores Range for off > 0 is an error; for off == 0 its
// whole answer is cut to n bytes.
func (s *source) Open(ctx context.Context, f modelload.File, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	commit := f.Key
	if commit == "" {
		commit = s.rev
	}
	what := s.name + "/" + f.Path
	req, err := s.request(ctx, http.MethodGet, s.resolveURL(commit, f.Path))
	if err != nil {
		return nil, err
	}
	modelload.SetRange(req, off, n)
	resp, err := s.do(s.client, req, what)
	if err != nil {
		return nil, err
	}
	if body, ok, err := modelload.RangeBody(resp, what, off, n); ok {
		return body, err
	}
	defer resp.Body.Close()
	return nil, s.hubError(resp, f.Path, commit)
}

// hubError turns a failed answer into a modelload error (see the package
// documentation). file is the file's path, "" for the model info; rev the
// revision asked for.
func (s *source) hubError(resp *http.Response, file, rev string) *modelload.Error {
	code := resp.Header.Get("X-Error-Code")
	detail := s.serverMessage(resp)
	fromCDN := resp.Request != nil && resp.Request.URL.Host != s.host
	status := resp.StatusCode
	with := func(msg string) string {
		if detail != "" {
			return msg + ": " + detail
		}
		return msg
	}
	switch {
	case code == "GatedRepo" && status == http.StatusUnauthorized:
		return modelload.Errorf(modelload.KindAuth, "%s is a gated repository: set HF_TOKEN to a token of an account that was granted access on %s/%s (%s)",
			s.name, s.endpoint, s.repo, with("HTTP 401"))
	case code == "GatedRepo":
		return modelload.Errorf(modelload.KindAuth, "%s is a gated repository and the account of HF_TOKEN was not granted access: request it on %s/%s (%s)",
			s.name, s.endpoint, s.repo, with("HTTP "+strconv.Itoa(status)))
	case status == http.StatusUnauthorized && s.token == "":
		return modelload.Errorf(modelload.KindAuth, "%s: repository not found, or it is private or gated: set HF_TOKEN to a token with access (%s)",
			s.name, with("HTTP 401"))
	case status == http.StatusUnauthorized:
		return modelload.Errorf(modelload.KindAuth, "%s: the token in HF_TOKEN was refused: it is invalid or expired, or has no access to this repository (%s)",
			s.name, with("HTTP 401"))
	case code == "RepoNotFound" && status == http.StatusNotFound:
		return modelload.Errorf(modelload.KindNotFound, "%s: repository not found, or the token in HF_TOKEN has no access to it (HTTP 404)", s.name)
	case code == "RevisionNotFound":
		return modelload.Errorf(modelload.KindNotFound, "%s: revision %q not found: no such branch, tag or commit (HTTP %d)", s.name, rev, status)
	case code == "EntryNotFound":
		return modelload.Errorf(modelload.KindNotFound, "%s: file %q not found at revision %s (HTTP %d)", s.name, file, rev, status)
	case status == http.StatusForbidden && fromCDN:
		return modelload.Retryable(modelload.KindNetwork, fmt.Errorf("GET %s/%s: the CDN refused the download link (HTTP 403; expired?); it is resolved anew on retry", s.name, file), 0)
	case status == http.StatusForbidden:
		return modelload.Errorf(modelload.KindAuth, "%s: access denied: the token in HF_TOKEN lacks read access to this repository (%s)", s.name, with("HTTP 403"))
	}
	what := "GET " + s.name + "@" + rev
	if file != "" {
		what = "GET " + s.name + "/" + file
	}
	return modelload.HTTPError(resp, what, detail)
}

// serverMessage is the hub's explanation (X-Error-Message, else a JSON
// {"error": ...} body): one line, at most 200 characters, and never the
// token.
func (s *source) serverMessage(resp *http.Response) string {
	msg := resp.Header.Get("X-Error-Message")
	if msg == "" && resp.Body != nil && strings.Contains(resp.Header.Get("Content-Type"), "json") {
		var body struct {
			Error string `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body) == nil {
			msg = body.Error
		}
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if s.token != "" {
		msg = strings.ReplaceAll(msg, s.token, "REDACTED")
	}
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return msg
}
