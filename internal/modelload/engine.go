package modelload

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// Options configure one Fetch. Zero values take the defaults named.
type Options struct {
	// URI is the model URI, recorded (redacted) in the manifest and in
	// messages. Required.
	URI string
	// Dest is the directory the model is written into; created if absent.
	// Required.
	Dest string
	// Allow and Ignore select files (see Patterns). Default: every file.
	Allow, Ignore []string
	// Concurrency is how many range requests run at once over all files.
	// Default 16.
	Concurrency int
	// ChunkSize is the size of one range request, in bytes; a file larger
	// than it is fetched as several ranges in parallel. Default 64 MiB.
	ChunkSize int64
	// Retries is how often one range request is retried after a retryable
	// failure before the load fails. Default 10.
	Retries int
	// BackoffBase and BackoffMax bound the exponential backoff between
	// retries (full jitter, as AWS's architecture blog recommends; a
	// server's Retry-After wins when longer). Defaults 500ms and 30s.
	BackoffBase, BackoffMax time.Duration
	// StallTimeout aborts and retries a request that moved no byte for this
	// long. Default 60s.
	StallTimeout time.Duration
	// ProgressInterval is how often progress is logged. Default 10s; <0
	// disables it.
	ProgressInterval time.Duration
	// VolumeSize is the destination volume's size limit in bytes (an
	// emptyDir's sizeLimit, which statfs does not see); 0: only statfs'
	// free space counts.
	VolumeSize int64
	// Listing, when set, is used instead of calling Source.List (the node
	// cache lists once to learn the revision).
	Listing *Listing
	// Unpack unpacks an archive (Listing.Archive) into dir and returns the
	// slash-separated paths written; required for archive sources
	// (cmd/model-loader passes archive.Unpack).
	Unpack func(ctx context.Context, archive, dir string) ([]string, error)
	// FreeSpace returns the bytes free for an unprivileged writer in dir.
	// Default: statfs. Tests replace it.
	FreeSpace func(dir string) (int64, error)
	// Log receives progress and the summary. Default: discard.
	Log logr.Logger

	// sleep waits between retries; tests replace it to see the delays.
	sleep func(ctx context.Context, d time.Duration) error
}

func (o *Options) defaults() error {
	if o.URI == "" || o.Dest == "" {
		return Errorf(KindUsage, "both a model URI and a destination directory are required")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 64 << 20
	}
	if o.Retries <= 0 {
		o.Retries = 10
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 10 * time.Second
	}
	if o.FreeSpace == nil {
		o.FreeSpace = statfsFree
	}
	if o.Log.GetSink() == nil {
		o.Log = logr.Discard()
	}
	if o.sleep == nil {
		o.sleep = sleep
	}
	return nil
}

// Manifest is the completion marker written last into the destination
// (ManifestName); see api.ModelManifestFile for its contract.
type Manifest struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	URI        string         `json:"uri"`
	Revision   string         `json:"revision"`
	Files      []ManifestFile `json:"files"`
	// Bytes is the sum of the file sizes.
	Bytes int64 `json:"bytes"`
	// Allow and Ignore are the patterns the files were selected with.
	Allow  []string `json:"allowPatterns,omitempty"`
	Ignore []string `json:"ignorePatterns,omitempty"`
}

// ManifestFile is one file of a Manifest.
type ManifestFile struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	// SHA256, CRC64NVME, CRC32C and MD5 are the hex digests the file was
	// verified against: one of those the source gave (the first of these
	// it gave), none when it gave none.
	SHA256    string `json:"sha256,omitempty"`
	CRC64NVME string `json:"crc64nvme,omitempty"`
	CRC32C    string `json:"crc32c,omitempty"`
	MD5       string `json:"md5,omitempty"`
}

// Result says what a Fetch did.
type Result struct {
	Manifest *Manifest
	// Fetched is the bytes read from the source in this run (0 when the
	// destination was already complete).
	Fetched int64
	// Reused is the bytes already in place before this run (complete files
	// and resumed partial ranges).
	Reused int64
	// Complete says the destination held the complete model already and
	// nothing was fetched, not even the listing.
	Complete bool
	Duration time.Duration
}

// Fetch loads the model src describes into o.Dest and returns once every
// selected file is in place, verified, and the manifest is written. A
// destination whose manifest names the same URI and whose files are all in
// place is left as it is without contacting the source. Files land under a
// temporary name in the destination's partial directory, written at their
// offsets by parallel range requests, and are renamed into place after
// their size and digest check; a restarted Fetch resumes each range where
// it stopped and never rewrites a verified file. Errors are *Error values
// whose Kind gives the exit code.
func Fetch(ctx context.Context, src Source, o Options) (*Result, error) {
	start := time.Now()
	if err := o.defaults(); err != nil {
		return nil, err
	}
	uri := RedactURI(o.URI)
	pats, err := NewPatterns(o.Allow, o.Ignore)
	if err != nil {
		return nil, Errorf(KindUsage, "%w", err)
	}
	if err := os.MkdirAll(o.Dest, 0o755); err != nil {
		return nil, &Error{Kind: KindDisk, Err: err}
	}
	if m := completeManifest(o.Dest, uri, o.Allow, o.Ignore); m != nil {
		o.Log.Info("model already complete, nothing to fetch", "uri", uri, "revision", m.Revision, "files", len(m.Files), "bytes", m.Bytes)
		return &Result{Manifest: m, Complete: true, Duration: time.Since(start)}, nil
	}
	lst := o.Listing
	if lst == nil {
		lst, err = listWithRetry(ctx, src, &o)
		if err != nil {
			return nil, err
		}
	}
	files, err := selectFiles(lst, pats, uri)
	if err != nil {
		return nil, err
	}
	e := &engine{o: o, src: src, uri: uri, revision: lst.Revision, start: start}
	if err := e.run(ctx, files); err != nil {
		return nil, err
	}
	m := &Manifest{APIVersion: "mlplane.io/v1alpha1", Kind: "ModelManifest", URI: uri, Revision: lst.Revision, Allow: o.Allow, Ignore: o.Ignore}
	if lst.Archive {
		if o.Unpack == nil {
			return nil, Errorf(KindInternal, "%s: an archive, and no unpacker configured", uri)
		}
		arc := filepath.Join(o.Dest, filepath.FromSlash(files[0].Path))
		written, err := o.Unpack(ctx, arc, o.Dest)
		if err != nil {
			return nil, err
		}
		if err := os.Remove(arc); err != nil {
			return nil, &Error{Kind: KindDisk, Err: err}
		}
		sort.Strings(written)
		for _, p := range written {
			st, err := os.Stat(filepath.Join(o.Dest, filepath.FromSlash(p)))
			if err != nil {
				return nil, &Error{Kind: KindDisk, Err: err}
			}
			m.Files = append(m.Files, ManifestFile{Path: p, Size: st.Size()})
		}
	} else {
		for _, f := range files {
			m.Files = append(m.Files, e.sums[f.Path].manifestFile(f.Path, e.sizes[f.Path]))
		}
	}
	for _, f := range m.Files {
		m.Bytes += f.Size
	}
	if err := writeManifest(o.Dest, m); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(o.Dest, partialDir)); err != nil {
		return nil, &Error{Kind: KindDisk, Err: err}
	}
	res := &Result{Manifest: m, Fetched: e.fetched.Load(), Reused: e.reused.Load(), Duration: time.Since(start)}
	o.Log.Info("model loaded", "uri", uri, "revision", m.Revision, "files", len(m.Files), "bytes", m.Bytes,
		"fetched", res.Fetched, "reused", res.Reused, "seconds", roundSeconds(res.Duration),
		"MBps", rateMBps(res.Fetched, res.Duration))
	return res, nil
}

func listWithRetry(ctx context.Context, src Source, o *Options) (*Listing, error) {
	for attempt := 0; ; attempt++ {
		lst, err := src.List(ctx)
		if err == nil {
			return lst, nil
		}
		e := Classify(err)
		if !e.Retry || attempt >= o.Retries || ctx.Err() != nil {
			return nil, e
		}
		d := backoff(o.BackoffBase, o.BackoffMax, attempt, e.RetryAfter)
		o.Log.Info("listing failed, retrying", "uri", RedactURI(o.URI), "attempt", attempt+1, "in", d.String(), "err", e.Error())
		if err := o.sleep(ctx, d); err != nil {
			return nil, Classify(err)
		}
	}
}

// selectFiles applies the patterns, sorts, and refuses duplicate paths and
// a path that is also another's directory.
func selectFiles(lst *Listing, pats *Patterns, uri string) ([]File, error) {
	var files []File
	for _, f := range lst.Files {
		if lst.Archive || pats.Match(f.Path) {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		if len(lst.Files) == 0 {
			return nil, Errorf(KindNotFound, "%s: no files at this location", uri)
		}
		return nil, Errorf(KindUsage, "%s: none of its %d files matches the allow/ignore patterns", uri, len(lst.Files))
	}
	if lst.Archive && len(files) != 1 {
		return nil, Errorf(KindInternal, "%s: an archive listing must have one file, has %d", uri, len(files))
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for i := 1; i < len(files); i++ {
		a, b := files[i-1].Path, files[i].Path
		if a == b {
			return nil, Errorf(KindUsage, "%s: two files named %q", uri, a)
		}
		if strings.HasPrefix(b, a+"/") {
			return nil, Errorf(KindUsage, "%s: %q is both a file and a directory", uri, a)
		}
	}
	return files, nil
}

// engine is the state of one Fetch.
type engine struct {
	o        Options
	src      Source
	uri      string
	revision string
	start    time.Time

	total   int64 // bytes of all selected files of known size
	done    atomic.Int64
	fetched atomic.Int64
	reused  atomic.Int64
	nfiles  int
	ndone   atomic.Int64

	mu    sync.Mutex
	sizes map[string]int64
	sums  map[string]digest
}

// verifiedRecord is one line of the partial directory's journal: a file
// renamed into place after its check, so that a restart can trust it.
type verifiedRecord struct {
	// Path, Size, the digests and Version are the listing's view of the
	// file; a restart trusts the file only if the listing still says this.
	Path         string `json:"path"`
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256,omitempty"`
	CRC64NVME    string `json:"crc64nvme,omitempty"`
	CRC32C       string `json:"crc32c,omitempty"`
	MD5          string `json:"md5,omitempty"`
	Version      string `json:"version,omitempty"`
	fromManifest bool
}

// matches says the record vouches for f as the source lists it now.
func (r verifiedRecord) matches(f File) bool {
	if f.Size >= 0 && f.Size != r.Size {
		return false
	}
	if r.fromManifest {
		// A manifest has no versions; its digest is the one verified.
		want := checked(f)
		return want == want.of(ManifestFile{SHA256: r.SHA256, CRC64NVME: r.CRC64NVME, CRC32C: r.CRC32C, MD5: r.MD5})
	}
	return r.SHA256 == f.SHA256 && r.CRC64NVME == f.CRC64NVME && r.CRC32C == f.CRC32C && r.MD5 == f.MD5 && r.Version == f.Version
}

const journalName = "verified.jsonl"

func (e *engine) run(ctx context.Context, files []File) error {
	e.sizes = map[string]int64{}
	e.sums = map[string]digest{}
	e.nfiles = len(files)
	pdir := filepath.Join(e.o.Dest, partialDir)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	journal := readJournal(pdir)
	// Files of an earlier complete load of the same URI and revision (with
	// other patterns) are as good as journalled.
	if old := readManifest(e.o.Dest); old != nil && old.URI == e.uri && old.Revision == e.revision {
		for _, mf := range old.Files {
			if _, ok := journal[mf.Path]; !ok {
				journal[mf.Path] = verifiedRecord{Path: mf.Path, Size: mf.Size, SHA256: mf.SHA256, CRC64NVME: mf.CRC64NVME,
					CRC32C: mf.CRC32C, MD5: mf.MD5, fromManifest: true}
			}
		}
	}
	var todo []*fileJob
	var need int64
	for _, f := range files {
		final := filepath.Join(e.o.Dest, filepath.FromSlash(f.Path))
		if st, err := os.Stat(final); err == nil && st.Mode().IsRegular() {
			if r, ok := journal[f.Path]; ok && r.Size == st.Size() && r.matches(f) {
				e.keep(f.Path, st.Size(), checked(f))
				continue
			}
			// A file in place that the journal does not vouch for (a
			// different revision, or written by someone else): verify it
			// when the source gives a digest, else fetch it again.
			if f.Size == st.Size() && checked(f).algo != "" {
				if ok, err := verifyFile(final, f); err == nil && ok {
					e.o.Log.V(1).Info("file in place matches the source's digest", "file", f.Path)
					e.keep(f.Path, st.Size(), checked(f))
					continue
				}
			}
		}
		j := &fileJob{f: f, final: final}
		if err := j.open(filepath.Join(pdir, "files", filepath.FromSlash(f.Path)), e.o.ChunkSize); err != nil {
			return err
		}
		defer j.close()
		todo = append(todo, j)
		if f.Size >= 0 {
			e.total += f.Size
			need += f.Size - j.resumed()
		}
		e.done.Add(j.resumed())
		e.reused.Add(j.resumed())
	}
	if err := e.o.checkSpace(need, len(todo)); err != nil {
		return err
	}
	if len(todo) == 0 {
		return nil
	}
	jf, err := os.OpenFile(filepath.Join(pdir, journalName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	defer jf.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopProgress := e.progress(ctx)
	defer stopProgress()

	// One queue of ranges over all files, in file order, so that files
	// complete one after another and each file's checksum follows its
	// writes closely.
	type task struct {
		j *fileJob
		i int
	}
	tasks := make(chan task)
	var wg sync.WaitGroup
	for range min(e.o.Concurrency, countRanges(todo)) {
		wg.Go(func() {
			for t := range tasks {
				if err := e.fetchRange(ctx, t.j, t.i); err != nil {
					cancel(err)
					continue
				}
				t.j.landed()
			}
		})
	}
	var fileWG sync.WaitGroup
	var jmu sync.Mutex
	for _, j := range todo {
		fileWG.Go(func() {
			if err := e.finishFile(ctx, j, jf, &jmu); err != nil {
				cancel(err)
			}
		})
	}
	for _, j := range todo {
		for i := range j.ranges {
			if !j.rangeDone(i) {
				j.pending.Add(1)
			}
		}
		if j.pending.Load() == 0 {
			j.firstWritesDone() // resumed complete: check it now
		}
	}
feed:
	for _, j := range todo {
		for i := range j.ranges {
			if j.rangeDone(i) {
				continue
			}
			select {
			case tasks <- task{j, i}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(tasks)
	wg.Wait()
	for _, j := range todo {
		j.firstWritesDone()
	}
	fileWG.Wait()
	if err := context.Cause(ctx); err != nil {
		return Classify(err)
	}
	return nil
}

func (e *engine) keep(path string, size int64, sum digest) {
	e.mu.Lock()
	e.sizes[path], e.sums[path] = size, sum
	e.mu.Unlock()
	e.reused.Add(size)
	e.ndone.Add(1)
}

func countRanges(js []*fileJob) int {
	n := 0
	for _, j := range js {
		n += len(j.ranges)
	}
	return max(n, 1)
}

// checkSpace fails when the bytes still to fetch exceed what the volume
// can take, before anything is downloaded.
func (o *Options) checkSpace(need int64, nfiles int) error {
	if need <= 0 {
		return nil
	}
	free, err := o.FreeSpace(o.Dest)
	if err != nil {
		return &Error{Kind: KindDisk, Err: fmt.Errorf("free space of %s: %w", o.Dest, err)}
	}
	where := fmt.Sprintf("%s has %s free", o.Dest, formatBytes(free))
	if o.VolumeSize > 0 {
		used, _ := dirSize(o.Dest)
		if left := o.VolumeSize - used; left < free {
			free = max(left, 0)
			where = fmt.Sprintf("%s has %s left of its %s size limit", o.Dest, formatBytes(free), formatBytes(o.VolumeSize))
		}
	}
	if need > free {
		return Errorf(KindDisk, "%s: the model needs %s more (%d files) and %s; nothing was downloaded", RedactURI(o.URI), formatBytes(need), nfiles, where)
	}
	return nil
}

// fetchRange downloads range i of j, resuming where it stopped and
// retrying retryable failures.
func (e *engine) fetchRange(ctx context.Context, j *fileJob, i int) error {
	for attempt := 0; ; attempt++ {
		err := e.fetchOnce(ctx, j, i)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		ce := Classify(err)
		if !ce.Retry || attempt >= e.o.Retries {
			if ce.Retry {
				ce = &Error{Kind: ce.Kind, Err: fmt.Errorf("%s: %s: giving up after %d retries: %w", e.uri, j.f.Path, attempt, ce.Err)}
			} else if !strings.Contains(ce.Error(), j.f.Path) {
				ce = &Error{Kind: ce.Kind, Err: fmt.Errorf("%s: %s: %w", e.uri, j.f.Path, ce.Err)}
			}
			return ce
		}
		d := backoff(e.o.BackoffBase, e.o.BackoffMax, attempt, ce.RetryAfter)
		e.o.Log.V(1).Info("range failed, retrying", "file", j.f.Path, "range", i, "attempt", attempt+1, "in", d.String(), "err", ce.Error())
		if err := e.o.sleep(ctx, d); err != nil {
			return err
		}
	}
}

var errStalled = errors.New("no data for the stall timeout")

func (e *engine) fetchOnce(ctx context.Context, j *fileJob, i int) error {
	if j.f.Size < 0 && j.done(i) > 0 {
		// A file of unknown size comes from a server that may not serve
		// ranges (that is why its size is unknown): start it over.
		if err := j.truncate(); err != nil {
			return err
		}
	}
	off, n := j.remaining(i)
	if n == 0 {
		return nil
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A stall cancels the request and closes its body, which unblocks a
	// read that does not watch the context.
	var bodyMu sync.Mutex
	var body io.ReadCloser
	stall := time.AfterFunc(e.o.StallTimeout, func() {
		cancel(errStalled)
		bodyMu.Lock()
		if body != nil {
			body.Close()
		}
		bodyMu.Unlock()
	})
	defer stall.Stop()
	// Whatever happens, record how far the range came.
	defer j.saveState()
	lastSave := time.Now()
	b, err := e.src.Open(rctx, j.f, off, n)
	if err != nil {
		if context.Cause(rctx) == errStalled {
			return Retryable(KindNetwork, fmt.Errorf("%s: %s: stalled: %s", e.uri, j.f.Path, errStalled), 0)
		}
		return err
	}
	bodyMu.Lock()
	body = b
	bodyMu.Unlock()
	defer b.Close()
	if context.Cause(rctx) == errStalled {
		return Retryable(KindNetwork, fmt.Errorf("%s: %s: stalled: %s", e.uri, j.f.Path, errStalled), 0)
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		want := len(*buf)
		if n >= 0 {
			want = int(min(int64(want), n))
		}
		if want == 0 {
			// Exactly the range was read; a longer body is the server
			// ignoring Range.
			if k, _ := b.Read((*buf)[:1]); k > 0 {
				return Errorf(KindIntegrity, "%s: %s: the source sent more than the %d bytes asked for at offset %d", e.uri, j.f.Path, j.length(i), j.start(i))
			}
			return nil
		}
		k, rerr := b.Read((*buf)[:want])
		if k > 0 {
			stall.Reset(e.o.StallTimeout)
			if _, err := j.part.WriteAt((*buf)[:k], off); err != nil {
				return &Error{Kind: KindDisk, Err: fmt.Errorf("writing %s: %w", j.f.Path, err)}
			}
			off += int64(k)
			if n >= 0 {
				n -= int64(k)
			}
			j.advance(i, int64(k))
			e.done.Add(int64(k))
			e.fetched.Add(int64(k))
			if time.Since(lastSave) > 5*time.Second {
				if err := j.saveState(); err != nil {
					return err
				}
				lastSave = time.Now()
			}
		}
		if rerr == io.EOF {
			if n > 0 {
				return Retryable(KindNetwork, fmt.Errorf("%s: %s: %w after %d bytes", e.uri, j.f.Path, io.ErrUnexpectedEOF, j.done(i)), 0)
			}
			return nil
		}
		if rerr != nil {
			if context.Cause(rctx) == errStalled {
				return Retryable(KindNetwork, fmt.Errorf("%s: %s: stalled: %s", e.uri, j.f.Path, errStalled), 0)
			}
			return rerr
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// finishFile hashes j's bytes as they land (reading behind the writers),
// then checks size and digest, renames the file into place and journals
// it. A digest mismatch discards the file and fetches it once more.
func (e *engine) finishFile(ctx context.Context, j *fileJob, jf *os.File, jmu *sync.Mutex) error {
	for attempt := 0; ; attempt++ {
		sum, size, err := j.hashBehind(ctx)
		if err != nil {
			return err
		}
		if err := j.check(sum, size); err != nil {
			if attempt > 0 || ctx.Err() != nil {
				return Errorf(KindIntegrity, "%s: %w", e.uri, err)
			}
			e.o.Log.Info("file failed its check, fetching it again", "file", j.f.Path, "err", err.Error())
			e.done.Add(-size)
			if err := j.reset(); err != nil {
				return err
			}
			if err := e.refetch(ctx, j); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(j.final), 0o755); err != nil {
			return &Error{Kind: KindDisk, Err: err}
		}
		if err := os.Rename(j.part.Name(), j.final); err != nil {
			return &Error{Kind: KindDisk, Err: err}
		}
		_ = os.Remove(j.statePath)
		rec := recordOf(j.f, size)
		b, _ := json.Marshal(rec)
		jmu.Lock()
		_, err = jf.Write(append(b, '\n'))
		jmu.Unlock()
		if err != nil {
			return &Error{Kind: KindDisk, Err: err}
		}
		e.mu.Lock()
		e.sizes[j.f.Path], e.sums[j.f.Path] = size, checked(j.f)
		e.mu.Unlock()
		e.ndone.Add(1)
		return nil
	}
}

// refetch downloads every range of j again, sequentially, after a failed
// check (the worker pool is busy with other files or gone).
func (e *engine) refetch(ctx context.Context, j *fileJob) error {
	j.restartWrites()
	defer j.writesDone()
	for i := range j.ranges {
		if err := e.fetchRange(ctx, j, i); err != nil {
			return err
		}
	}
	return nil
}

func recordOf(f File, size int64) verifiedRecord {
	return verifiedRecord{Path: f.Path, Size: size, SHA256: f.SHA256, CRC64NVME: f.CRC64NVME, CRC32C: f.CRC32C, MD5: f.MD5, Version: f.Version}
}

func readJournal(pdir string) map[string]verifiedRecord {
	out := map[string]verifiedRecord{}
	f, err := os.Open(filepath.Join(pdir, journalName))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r verifiedRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Path != "" {
			out[r.Path] = r
		}
	}
	return out
}

// verifyFile hashes a file already in place and compares it with f's
// checked digest; f must have one.
func verifyFile(name string, f File) (bool, error) {
	fh, err := os.Open(name)
	if err != nil {
		return false, err
	}
	defer fh.Close()
	want := checked(f)
	h := want.newHash()
	if _, err := io.Copy(h, fh); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == want.hex, nil
}

func readManifest(dest string) *Manifest {
	b, err := os.ReadFile(filepath.Join(dest, ManifestName))
	if err != nil {
		return nil
	}
	var m Manifest
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return &m
}

func completeManifest(dest, uri string, allow, ignore []string) *Manifest {
	m := readManifest(dest)
	if m == nil || m.URI != uri || !equalStrings(m.Allow, allow) || !equalStrings(m.Ignore, ignore) {
		return nil
	}
	for _, f := range m.Files {
		st, err := os.Stat(filepath.Join(dest, filepath.FromSlash(f.Path)))
		if err != nil || st.Size() != f.Size {
			return nil
		}
	}
	return m
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// writeManifest writes m to a temporary name and renames it into place.
func writeManifest(dest string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return &Error{Kind: KindInternal, Err: err}
	}
	return writeFileAtomic(filepath.Join(dest, ManifestName), append(b, '\n'))
}

func writeFileAtomic(name string, b []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	if err := os.Rename(tmp, name); err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	return nil
}

// backoff is the delay before retry attempt+1: full jitter over an
// exponential ceiling, at least the server's Retry-After.
func backoff(base, maxD time.Duration, attempt int, after time.Duration) time.Duration {
	ceil := base << min(attempt, 20)
	if ceil > maxD || ceil <= 0 {
		ceil = maxD
	}
	d := time.Duration(rand.Int64N(int64(ceil)) + 1)
	return max(d, after)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				} else {
					n += info.Size()
				}
			}
		}
		return nil
	})
	return n, err
}

// progress logs bytes, rate and ETA every ProgressInterval until stopped.
func (e *engine) progress(ctx context.Context) func() {
	if e.o.ProgressInterval < 0 {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(e.o.ProgressInterval)
		defer t.Stop()
		lastBytes, lastT := e.fetched.Load(), time.Now()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				f := e.fetched.Load()
				rate := float64(f-lastBytes) / now.Sub(lastT).Seconds()
				lastBytes, lastT = f, now
				kv := []any{"done", formatBytes(e.done.Load()), "of", formatBytes(e.total),
					"rate", formatBytes(int64(rate)) + "/s", "files", fmt.Sprintf("%d/%d", e.ndone.Load(), e.nfiles)}
				if left := e.total - e.done.Load(); rate > 0 && left > 0 {
					kv = append(kv, "eta", time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second).String())
				}
				e.o.Log.Info("progress", kv...)
			}
		}
	})
	return func() { close(stop); wg.Wait() }
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func roundSeconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

func rateMBps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)/d.Seconds()/1e6*10)) / 10
}
