// Package fakehub is an in-process stand-in for the Hugging Face Hub, for
// the hf source's tests, the loader's benchmarks and end-to-end tests. It
// answers the calls the hf source makes the way huggingface.co does
// (observed behaviour, and huggingface_hub's file_download.py and
// utils/_http.py, which read it):
//
//   - GET /api/models/{repo}/revision/{rev}[?blobs=true]: the model info
//     JSON, "sha" the commit the revision resolves to, "siblings" the files
//     (rfilename; with blobs=true also size, blobId and, for LFS files,
//     lfs{sha256,size,pointerSize}); "gated" false or "manual".
//   - GET|HEAD /{repo}/resolve/{rev}/{path}: a regular (non-LFS) file is
//     answered directly (200, or 206 for a Range, ETag the quoted git blob
//     id, X-Repo-Commit); an LFS file is answered with 302 to the CDN server,
//     a different host, with X-Linked-Etag (the quoted sha256),
//     X-Linked-Size and X-Repo-Commit on the redirect itself, as the hub
//     does for cdn-lfs.hf.co and cas-bridge.xethub.hf.co.
//   - The CDN serves content by sha256 under a signed, expiring URL, with
//     Range support (http.ServeContent), and records every Authorization
//     header it is sent: the hub's token must never reach it.
//   - Errors carry the hub's X-Error-Code and X-Error-Message headers and a
//     {"error": ...} body: a missing repository (or a private one the caller
//     cannot see) is 401 RepoNotFound without a token and 404 RepoNotFound
//     with one; an invalid token is 401 without a code; a gated repository's
//     files are 401 GatedRepo without a token and 403 GatedRepo with a token
//     that was not granted access (its model info stays public, as on the
//     hub); an unknown revision is 404 RevisionNotFound; an unknown file 404
//     EntryNotFound.
//   - A renamed repository answers 307 with a relative Location to its new
//     name, for the API and resolve URLs alike.
//
// Files come from memory (modeltest.Model) or from a directory on disk, so
// that a benchmark can serve gigabytes without holding them. SetFault
// injects failures (status codes with Retry-After, cut connections,
// stalls) into chosen requests.
//
// Use NewServer for two httptest servers (hub and CDN), or serve Hub and
// Hub.CDN on listeners of your own and set CDNURL.
package fakehub

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// DefaultLFSThreshold is the size from which a file is stored in LFS when
// Hub.LFSThreshold is 0: 1 MiB, so that modeltest.Small() has one LFS shard
// (2 MiB + 13 bytes) and one regular one (1 MiB - 7 bytes).
const DefaultLFSThreshold = 1 << 20

// Repo is one commit of a repository, given to Hub.Add.
type Repo struct {
	// Files are the commit's files held in memory.
	Files modeltest.Model
	// Dir, when set, adds every regular file under it (path relative to
	// Dir, slash-separated), served from disk; hashed once by Add.
	Dir string
	// Refs are the branch and tag names that point at this commit. With no
	// Refs, or Refs naming "main", "main" moves to this commit; the first
	// commit of a repository is always "main".
	Refs []string
	// Commit is the commit's sha (40 lower-case hex digits); default: a
	// sha-1 of the repository name and its files' blob ids.
	Commit string
	// Private repositories are visible only with one of Tokens.
	Private bool
	// Gated repositories list publicly, but their files need one of
	// Tokens (an account that was granted access).
	Gated bool
	// Tokens are the tokens with access (read access for a private
	// repository, granted access for a gated one). Every token of every
	// repository is a valid token of the hub.
	Tokens []string
}

// Request is one request either server received.
type Request struct {
	// Server is "hub" or "cdn".
	Server string
	Method string
	// Path is the URL path as sent (escaped).
	Path string
	// Range is the Range header, "" if none.
	Range string
	// Authorization is the Authorization header, "" if none.
	Authorization string
}

// Fault describes a failure to inject into one request.
type Fault struct {
	// Status, when not 0, answers the request with this status code
	// instead of serving it, with RetryAfter (seconds or an HTTP date) as
	// Retry-After when set.
	Status     int
	RetryAfter string
	// After is how many body bytes are served before Cut or Stall acts.
	After int64
	// Cut closes the connection after After body bytes (the client sees
	// an unexpected EOF).
	Cut bool
	// Stall pauses the body for this long after After bytes (or until the
	// client goes away), then serves the rest.
	Stall time.Duration
}

// Hub is the fake hub: an http.Handler for the hub's host, and CDN() for
// the CDN's. Configure it before serving; Add, Rename and SetFault may be
// called at any time.
type Hub struct {
	// CDNURL is the CDN server's base URL ("http://127.0.0.1:port"), where
	// LFS files are redirected to. NewServer sets it.
	CDNURL string
	// LFSThreshold is the size in bytes from which a file is an LFS file;
	// 0 means DefaultLFSThreshold.
	LFSThreshold int64
	// NoBlobs ignores ?blobs=true (as some mirrors do): siblings carry
	// rfilename only, and clients must HEAD each file for its size.
	NoBlobs bool
	// LinkTTL is how long a CDN link stays valid; 0 means one hour.
	LinkTTL time.Duration

	mu      sync.Mutex
	repos   map[string]*repo
	renamed map[string]string
	blobs   map[string]*file // sha256 → LFS file, for the CDN
	tokens  map[string]bool
	fault   func(Request) *Fault
	log     []Request
	secret  []byte
}

type repo struct {
	name    string
	private bool
	gated   bool
	tokens  map[string]bool
	refs    map[string]string
	commits map[string]*commit
}

type commit struct {
	sha   string
	files map[string]*file
	paths []string
}

type file struct {
	path   string
	size   int64
	data   []byte // nil for a disk file
	disk   string
	sha256 string
	blobID string
	lfs    bool
}

// New returns an empty hub.
func New() *Hub {
	return &Hub{
		repos:   map[string]*repo{},
		renamed: map[string]string{},
		blobs:   map[string]*file{},
		tokens:  map[string]bool{},
		secret:  []byte("fakehub-cdn-signing-key"),
	}
}

// Add adds a commit to the repository name ("org/model" or "model"),
// creating it, and returns the commit's sha. The repository's Private,
// Gated and Tokens are those of the latest Add; see Repo.Refs for where
// "main" points. A file under Dir that cannot be read is an error.
func (h *Hub) Add(name string, r Repo) (string, error) {
	files := map[string]*file{}
	for p, b := range r.Files {
		files[p] = &file{path: p, size: int64(len(b)), data: b}
	}
	if r.Dir != "" {
		err := filepath.WalkDir(r.Dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, err := filepath.Rel(r.Dir, p)
			if err != nil {
				return err
			}
			st, err := d.Info()
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			files[rel] = &file{path: rel, size: st.Size(), disk: p}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("fakehub: %s: %w", name, err)
		}
	}
	threshold := h.LFSThreshold
	if threshold == 0 {
		threshold = DefaultLFSThreshold
	}
	c := &commit{files: files}
	for p, f := range files {
		if err := f.digest(threshold); err != nil {
			return "", fmt.Errorf("fakehub: %s: %s: %w", name, p, err)
		}
		c.paths = append(c.paths, p)
	}
	sort.Strings(c.paths)
	c.sha = r.Commit
	if c.sha == "" {
		s := sha1.New()
		fmt.Fprintf(s, "%s\n", name)
		for _, p := range c.paths {
			fmt.Fprintf(s, "%s %s\n", p, files[p].blobID)
		}
		c.sha = hex.EncodeToString(s.Sum(nil))
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	rp := h.repos[name]
	if rp == nil {
		rp = &repo{name: name, refs: map[string]string{}, commits: map[string]*commit{}}
		h.repos[name] = rp
	}
	rp.private, rp.gated = r.Private, r.Gated
	rp.tokens = map[string]bool{}
	for _, t := range r.Tokens {
		rp.tokens[t] = true
		h.tokens[t] = true
	}
	rp.commits[c.sha] = c
	if _, ok := rp.refs["main"]; !ok || len(r.Refs) == 0 {
		rp.refs["main"] = c.sha
	}
	for _, ref := range r.Refs {
		rp.refs[ref] = c.sha
	}
	for _, f := range files {
		if f.lfs {
			h.blobs[f.sha256] = f
		}
	}
	return c.sha, nil
}

// MustAdd is Add that panics on error, for tests.
func (h *Hub) MustAdd(name string, r Repo) string {
	sha, err := h.Add(name, r)
	if err != nil {
		panic(err)
	}
	return sha
}

// AddToken makes token a valid token that has access to no private or
// gated repository.
func (h *Hub) AddToken(token string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tokens[token] = true
}

// Rename makes requests for repository from answer 307 with a relative
// Location naming to, as the hub does for renamed or transferred
// repositories.
func (h *Hub) Rename(from, to string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.renamed[from] = to
}

// SetFault installs f, called for every request either server receives
// (before it is served); a non-nil *Fault is applied to that request. nil
// removes it. See FailFirst.
func (h *Hub) SetFault(f func(Request) *Fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fault = f
}

// FailFirst returns a fault function for SetFault that applies f to the
// first n requests match accepts (every request when match is nil), and
// lets the others through. Safe for concurrent use.
func FailFirst(n int, f Fault, match func(Request) bool) func(Request) *Fault {
	var mu sync.Mutex
	left := n
	return func(r Request) *Fault {
		if match != nil && !match(r) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if left <= 0 {
			return nil
		}
		left--
		fc := f
		return &fc
	}
}

// Requests returns every request received so far, in order.
func (h *Hub) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Request(nil), h.log...)
}

// CDNAuthorizations returns the Authorization headers the CDN received (one
// per request that carried one): it must stay empty.
func (h *Hub) CDNAuthorizations() []string {
	var out []string
	for _, r := range h.Requests() {
		if r.Server == "cdn" && r.Authorization != "" {
			out = append(out, r.Authorization)
		}
	}
	return out
}

// ResetRequests forgets the requests recorded so far.
func (h *Hub) ResetRequests() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.log = nil
}

// Server is a hub and its CDN, each on its own httptest server (so on its
// own host:port).
type Server struct {
	*Hub
	HubServer, CDNServer *httptest.Server
	// URL is the hub's endpoint, for HF_ENDPOINT.
	URL string
}

// NewServer starts h and its CDN on two loopback httptest servers and sets
// h.CDNURL. Close stops both.
func NewServer(h *Hub) *Server {
	cdn := httptest.NewServer(h.CDN())
	h.mu.Lock()
	h.CDNURL = cdn.URL
	h.mu.Unlock()
	hub := httptest.NewServer(h)
	return &Server{Hub: h, HubServer: hub, CDNServer: cdn, URL: hub.URL}
}

// Close stops both servers.
func (s *Server) Close() {
	s.HubServer.Close()
	s.CDNServer.Close()
}

// digest fills f's sha256, blob id and LFS flag.
func (f *file) digest(threshold int64) error {
	s := sha256.New()
	if f.data != nil {
		s.Write(f.data)
	} else {
		fh, err := os.Open(f.disk)
		if err != nil {
			return err
		}
		_, err = io.Copy(s, fh)
		fh.Close()
		if err != nil {
			return err
		}
	}
	f.sha256 = hex.EncodeToString(s.Sum(nil))
	f.lfs = f.size >= threshold
	// The blob id is the git object id of what git stores: the LFS pointer
	// file for an LFS file, the content otherwise.
	g := sha1.New()
	if f.lfs {
		ptr := lfsPointer(f.sha256, f.size)
		fmt.Fprintf(g, "blob %d\x00%s", len(ptr), ptr)
	} else {
		fmt.Fprintf(g, "blob %d\x00", f.size)
		r, err := f.open()
		if err != nil {
			return err
		}
		_, err = io.Copy(g, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	f.blobID = hex.EncodeToString(g.Sum(nil))
	return nil
}

func lfsPointer(sha string, size int64) string {
	return fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", sha, size)
}

type readSeekCloser interface {
	io.ReadSeeker
	io.Closer
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

func (f *file) open() (readSeekCloser, error) {
	if f.data != nil {
		return nopCloser{bytes.NewReader(f.data)}, nil
	}
	return os.Open(f.disk)
}

// ServeHTTP answers the hub's requests.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w, ok := h.begin("hub", w, r)
	if !ok {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			http.Error(w, "bad path", http.StatusBadRequest)
			return
		}
		parts[i] = u
	}
	switch {
	case len(parts) >= 3 && parts[0] == "api" && parts[1] == "models":
		h.serveInfo(w, r, parts[2:])
	case len(parts) >= 4 && (parts[1] == "resolve" || parts[2] == "resolve"):
		h.serveResolve(w, r, parts)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// begin records r, applies a fault, and returns the writer to serve with
// (false when the fault answered the request).
func (h *Hub) begin(server string, w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
	req := Request{Server: server, Method: r.Method, Path: r.URL.EscapedPath(), Range: r.Header.Get("Range"), Authorization: r.Header.Get("Authorization")}
	h.mu.Lock()
	h.log = append(h.log, req)
	fault := h.fault
	h.mu.Unlock()
	if fault == nil {
		return w, true
	}
	f := fault(req)
	if f == nil {
		return w, true
	}
	if f.Status != 0 {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		http.Error(w, "injected fault", f.Status)
		return nil, false
	}
	return &faultWriter{ResponseWriter: w, f: *f, ctx: r}, true
}

type faultWriter struct {
	http.ResponseWriter
	f    Fault
	ctx  *http.Request
	n    int64
	done bool
}

func (fw *faultWriter) Write(p []byte) (int, error) {
	if fw.done || fw.n+int64(len(p)) <= fw.f.After {
		k, err := fw.ResponseWriter.Write(p)
		fw.n += int64(k)
		return k, err
	}
	head := p[:fw.f.After-fw.n]
	k, err := fw.ResponseWriter.Write(head)
	fw.n += int64(k)
	if err != nil {
		return k, err
	}
	if fl, ok := fw.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	if fw.f.Cut {
		panic(http.ErrAbortHandler)
	}
	fw.done = true
	if fw.f.Stall > 0 {
		t := time.NewTimer(fw.f.Stall)
		select {
		case <-t.C:
		case <-fw.ctx.Context().Done():
			t.Stop()
			return k, fw.ctx.Context().Err()
		}
	}
	k2, err := fw.ResponseWriter.Write(p[len(head):])
	fw.n += int64(k2)
	return k + k2, err
}

func (fw *faultWriter) Flush() {
	if fl, ok := fw.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

// hubError answers as the hub does: X-Error-Code, X-Error-Message and a
// JSON body.
func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// lookup finds the repository name and checks the caller may see it;
// false when it answered (a redirect or an error). files says the caller
// wants file contents (gated repositories refuse those only).
func (h *Hub) lookup(w http.ResponseWriter, r *http.Request, name string, files bool, redirect func(to string) string) (*repo, bool) {
	token, hasToken := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	h.mu.Lock()
	valid := h.tokens[token]
	to, renamed := h.renamed[name]
	rp := h.repos[name]
	h.mu.Unlock()
	if hasToken && !valid {
		hubError(w, http.StatusUnauthorized, "", "Invalid credentials in Authorization header")
		return nil, false
	}
	if renamed {
		w.Header().Set("Location", redirect(to))
		w.WriteHeader(http.StatusTemporaryRedirect)
		return nil, false
	}
	if rp == nil || (rp.private && !rp.tokens[token]) {
		if !hasToken {
			hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
		} else {
			hubError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
		}
		return nil, false
	}
	if files && rp.gated && !rp.tokens[token] {
		if !hasToken {
			hubError(w, http.StatusUnauthorized, "GatedRepo",
				fmt.Sprintf("Access to model %s is restricted. You must have access to it and be authenticated to access it. Please log in.", name))
		} else {
			hubError(w, http.StatusForbidden, "GatedRepo",
				fmt.Sprintf("Access to model %s is restricted and you are not in the authorized list. Visit https://huggingface.co/%s to ask for access.", name, name))
		}
		return nil, false
	}
	return rp, true
}

// resolveRev finds rev (a branch, a tag or a full commit sha) in rp.
func (h *Hub) resolveRev(w http.ResponseWriter, rp *repo, rev string) (*commit, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sha, ok := rp.refs[rev]
	if !ok {
		sha = rev
	}
	c := rp.commits[sha]
	if c == nil {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return nil, false
	}
	return c, true
}

type sibling struct {
	RFilename string   `json:"rfilename"`
	BlobID    string   `json:"blobId,omitempty"`
	Size      *int64   `json:"size,omitempty"`
	LFS       *lfsInfo `json:"lfs,omitempty"`
}

type lfsInfo struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

// serveInfo answers /api/models/{repo}[/revision/{rev}].
func (h *Hub) serveInfo(w http.ResponseWriter, r *http.Request, parts []string) {
	var name, rev string
	switch {
	case len(parts) == 1 || len(parts) == 2:
		name, rev = strings.Join(parts, "/"), "main"
	case len(parts) == 3 && parts[1] == "revision":
		name, rev = parts[0], parts[2]
	case len(parts) == 4 && parts[2] == "revision":
		name, rev = parts[0]+"/"+parts[1], parts[3]
	default:
		hubError(w, http.StatusNotFound, "", "Sorry, we can't find the page you are looking for.")
		return
	}
	rp, ok := h.lookup(w, r, name, false, func(to string) string {
		loc := "/api/models/" + to
		if len(parts) > 2 {
			loc += "/revision/" + url.PathEscape(rev)
		}
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		return loc
	})
	if !ok {
		return
	}
	c, ok := h.resolveRev(w, rp, rev)
	if !ok {
		return
	}
	blobs := r.URL.Query().Get("blobs") == "true" && !h.NoBlobs
	sibs := make([]sibling, 0, len(c.paths))
	for _, p := range c.paths {
		f := c.files[p]
		s := sibling{RFilename: p}
		if blobs {
			size := f.size
			s.BlobID, s.Size = f.blobID, &size
			if f.lfs {
				s.LFS = &lfsInfo{SHA256: f.sha256, Size: f.size, PointerSize: len(lfsPointer(f.sha256, f.size))}
			}
		}
		sibs = append(sibs, s)
	}
	var gated any = false
	if rp.gated {
		gated = "manual"
	}
	author, _, _ := strings.Cut(name, "/")
	info := map[string]any{
		"_id":          c.sha[:24],
		"id":           name,
		"modelId":      name,
		"author":       author,
		"sha":          c.sha,
		"lastModified": "2024-05-01T12:00:00.000Z",
		"createdAt":    "2024-05-01T12:00:00.000Z",
		"private":      rp.private,
		"disabled":     false,
		"gated":        gated,
		"downloads":    0,
		"likes":        0,
		"tags":         []string{},
		"siblings":     sibs,
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Repo-Commit", c.sha)
	if r.Method == http.MethodHead {
		return
	}
	json.NewEncoder(w).Encode(info)
}

// serveResolve answers /{repo}/resolve/{rev}/{path}.
func (h *Hub) serveResolve(w http.ResponseWriter, r *http.Request, parts []string) {
	i := 1
	if parts[1] != "resolve" {
		i = 2
	}
	if len(parts) < i+3 {
		hubError(w, http.StatusNotFound, "", "Sorry, we can't find the page you are looking for.")
		return
	}
	name, rev, p := strings.Join(parts[:i], "/"), parts[i+1], strings.Join(parts[i+2:], "/")
	rp, ok := h.lookup(w, r, name, true, func(to string) string {
		loc := "/" + to + "/resolve/" + url.PathEscape(rev) + "/" + escapePath(p)
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		return loc
	})
	if !ok {
		return
	}
	c, ok := h.resolveRev(w, rp, rev)
	if !ok {
		return
	}
	f := c.files[p]
	if f == nil {
		hubError(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	w.Header().Set("X-Repo-Commit", c.sha)
	if f.lfs {
		h.mu.Lock()
		base, ttl := h.CDNURL, h.LinkTTL
		h.mu.Unlock()
		if ttl == 0 {
			ttl = time.Hour
		}
		exp := strconv.FormatInt(time.Now().Add(ttl).Unix(), 10)
		loc := fmt.Sprintf("%s/repos/%s/%s/%s?Expires=%s&Signature=%s", base, f.sha256[:2], f.sha256[2:4], f.sha256, exp, h.sign(f.sha256, exp))
		w.Header().Set("X-Linked-Etag", `"`+f.sha256+`"`)
		w.Header().Set("X-Linked-Size", strconv.FormatInt(f.size, 10))
		w.Header().Set("ETag", `"`+f.sha256+`"`)
		w.Header().Set("Location", loc)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		body := "Found. Redirecting to " + loc
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusFound)
		if r.Method != http.MethodHead {
			io.WriteString(w, body)
		}
		return
	}
	w.Header().Set("ETag", `"`+f.blobID+`"`)
	serveFile(w, r, f)
}

func serveFile(w http.ResponseWriter, r *http.Request, f *file) {
	rd, err := f.open()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer rd.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, rd)
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i := range parts {
		parts[i] = url.PathEscape(parts[i])
	}
	return strings.Join(parts, "/")
}

func (h *Hub) sign(sha, exp string) string {
	m := hmac.New(sha256.New, h.secret)
	io.WriteString(m, sha+"\n"+exp)
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// CDN returns the handler of the CDN host: GET and HEAD of
// /repos/xx/yy/{sha256}?Expires=...&Signature=... with Range support; a
// bad signature or an expired link is 403.
func (h *Hub) CDN() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w, ok := h.begin("cdn", w, r)
		if !ok {
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		sha := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		q := r.URL.Query()
		exp := q.Get("Expires")
		if !hmac.Equal([]byte(q.Get("Signature")), []byte(h.sign(sha, exp))) {
			http.Error(w, "<Error><Code>AccessDenied</Code><Message>Invalid signature</Message></Error>", http.StatusForbidden)
			return
		}
		if t, err := strconv.ParseInt(exp, 10, 64); err != nil || time.Now().Unix() > t {
			http.Error(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", http.StatusForbidden)
			return
		}
		h.mu.Lock()
		f := h.blobs[sha]
		h.mu.Unlock()
		if f == nil {
			http.Error(w, "<Error><Code>NoSuchKey</Code></Error>", http.StatusNotFound)
			return
		}
		w.Header().Set("ETag", `"`+f.sha256+`"`)
		serveFile(w, r, f)
	})
}
