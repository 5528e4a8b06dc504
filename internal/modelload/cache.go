package modelload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/gofrs/flock"
)

// Cache is a node-local model cache: a directory on the node (a hostPath
// volume) shared by every loader there. A model is fetched into the cache
// once per URI, resolved revision and pattern set, under an exclusive file
// lock, and copied from there into each pod's volume, so the second pod of
// a model on a node reads nothing from the network but the listing that
// resolves the revision. Entries are evicted least recently used first
// when the cache grows past MaxBytes; an entry in use (locked) is never
// evicted.
//
// Layout: DIR/<key>/ holds the files and the manifest of one model,
// DIR/<key>.lock its lock, DIR/<key>.used its last use (mtime); key is the
// hex SHA-256 of the redacted URI, the revision and the patterns.
type Cache struct {
	// Dir is the cache directory, created if absent.
	Dir string
	// MaxBytes bounds the cache's content; 0: unbounded.
	MaxBytes int64
	// LockPoll is how often a loader waiting for another one's download
	// retries the lock. Default 500ms.
	LockPoll time.Duration
}

// cacheKey names the entry of a model: its redacted URI (no credentials),
// revision and patterns.
func cacheKey(uri, revision string, allow, ignore []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", RedactURI(uri), revision, strings.Join(allow, ","), strings.Join(ignore, ","))
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Load loads the model into o.Dest through the cache. A destination
// already complete is left alone, as Fetch does. Result.Fetched counts the
// bytes read from the source, 0 on a cache hit.
func (c *Cache) Load(ctx context.Context, src Source, o Options) (*Result, error) {
	start := time.Now()
	if err := o.defaults(); err != nil {
		return nil, err
	}
	uri := RedactURI(o.URI)
	if m := completeManifest(o.Dest, uri, o.Allow, o.Ignore); m != nil {
		o.Log.Info("model already complete, nothing to fetch", "uri", uri, "revision", m.Revision, "files", len(m.Files), "bytes", m.Bytes)
		return &Result{Manifest: m, Complete: true, Duration: time.Since(start)}, nil
	}
	poll := c.LockPoll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, &Error{Kind: KindDisk, Err: fmt.Errorf("node cache: %w", err)}
	}
	lst := o.Listing
	if lst == nil {
		var err error
		if lst, err = listWithRetry(ctx, src, &o); err != nil {
			return nil, err
		}
	}
	key := cacheKey(o.URI, lst.Revision, o.Allow, o.Ignore)
	entry := filepath.Join(c.Dir, key)
	lock := flock.New(entry + ".lock")
	if ok, _ := lock.TryLock(); !ok {
		o.Log.Info("another loader on this node is loading this model; waiting for it", "uri", uri, "cacheEntry", key)
		if ok, err := lock.TryLockContext(ctx, poll); !ok {
			return nil, &Error{Kind: KindDisk, Err: fmt.Errorf("node cache: locking %s: %w", entry, err)}
		}
	}
	defer lock.Unlock()

	res := &Result{}
	m := completeManifest(entry, uri, o.Allow, o.Ignore)
	if m == nil {
		fo := o
		fo.Dest, fo.Listing = entry, lst
		r, err := Fetch(ctx, src, fo)
		if err != nil {
			return nil, err
		}
		m, res.Fetched = r.Manifest, r.Fetched
	} else {
		o.Log.Info("model found in the node cache", "uri", uri, "revision", m.Revision, "cacheEntry", key)
	}
	if err := copyModel(ctx, entry, o, m); err != nil {
		return nil, err
	}
	now := time.Now()
	used := entry + ".used"
	if err := os.WriteFile(used, nil, 0o644); err == nil {
		_ = os.Chtimes(used, now, now)
	}
	lock.Unlock()
	c.evict(o.Log, key)
	res.Manifest, res.Reused, res.Duration = m, m.Bytes-res.Fetched, time.Since(start)
	o.Log.Info("model loaded", "uri", uri, "revision", m.Revision, "files", len(m.Files), "bytes", m.Bytes,
		"fetched", res.Fetched, "fromCache", res.Fetched == 0, "seconds", roundSeconds(res.Duration))
	return res, nil
}

// copyModel copies a complete cache entry into o.Dest (copy_file_range,
// which reflinks where the filesystem can), each file to a temporary name
// first, then the manifest.
func copyModel(ctx context.Context, entry string, o Options, m *Manifest) error {
	// The files not in place yet, each looked at once.
	var todo []ManifestFile
	var need int64
	for _, f := range m.Files {
		if st, err := os.Stat(filepath.Join(o.Dest, filepath.FromSlash(f.Path))); err != nil || st.Size() != f.Size {
			todo = append(todo, f)
			need += f.Size
		}
	}
	if err := os.MkdirAll(o.Dest, 0o755); err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	if err := o.checkSpace(need, len(m.Files)); err != nil {
		return err
	}
	for _, f := range todo {
		if err := ctx.Err(); err != nil {
			return Classify(err)
		}
		to := filepath.Join(o.Dest, filepath.FromSlash(f.Path))
		if err := copyFile(filepath.Join(entry, filepath.FromSlash(f.Path)), to); err != nil {
			return &Error{Kind: KindDisk, Err: fmt.Errorf("copying %s from the node cache: %w", f.Path, err)}
		}
	}
	return writeManifest(o.Dest, m)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	tmp := to + ".mlplane-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, to)
}

// evict removes the least recently used complete entries, never keep and
// never one locked by another loader, until the cache fits MaxBytes.
func (c *Cache) evict(log logr.Logger, keep string) {
	if c.MaxBytes <= 0 {
		return
	}
	ents, err := os.ReadDir(c.Dir)
	if err != nil {
		return
	}
	type item struct {
		key  string
		size int64
		used time.Time
	}
	var items []item
	var total int64
	for _, d := range ents {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(c.Dir, d.Name())
		size, _ := dirSize(dir)
		total += size
		used := time.Time{}
		if st, err := os.Stat(dir + ".used"); err == nil {
			used = st.ModTime()
		}
		items = append(items, item{d.Name(), size, used})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].used.Before(items[j].used) })
	for _, it := range items {
		if total <= c.MaxBytes {
			return
		}
		if it.key == keep {
			continue
		}
		l := flock.New(filepath.Join(c.Dir, it.key) + ".lock")
		if ok, _ := l.TryLock(); !ok {
			continue
		}
		if err := os.RemoveAll(filepath.Join(c.Dir, it.key)); err == nil {
			os.Remove(filepath.Join(c.Dir, it.key) + ".used")
			total -= it.size
			log.Info("evicted a model from the node cache", "cacheEntry", it.key, "bytes", it.size)
		}
		l.Unlock()
	}
}

// Load is model-loader's whole job: the Source for o.URI, then Fetch, or
// Cache.Load when cache is not nil.
func Load(ctx context.Context, o Options, so SourceOptions, cache *Cache) (*Result, error) {
	src, err := NewSource(ctx, o.URI, so)
	if err != nil {
		return nil, err
	}
	if cache != nil {
		return cache.Load(ctx, src, o)
	}
	return Fetch(ctx, src, o)
}
