package modelload

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// fileJob is one file being fetched: its partial file, its ranges and how
// far each has come, and the resume state saved beside the partial file.
type fileJob struct {
	f         File
	final     string
	part      *os.File
	statePath string
	ranges    []span
	doneB     []atomic.Int64

	mu       sync.Mutex
	notify   chan struct{} // a write landed (capacity 1)
	finished chan struct{} // closed when no more writes come
	saveMu   sync.Mutex

	// pending counts the ranges handed to the workers and not yet landed;
	// the last to land ends the first round of writes (firstDone).
	pending   atomic.Int64
	firstDone sync.Once
}

type span struct{ start, length int64 } // length -1: to the end (unknown size)

// partState is the resume state of a partial file, saved as JSON.
type partState struct {
	Size      int64   `json:"size"`
	Version   string  `json:"version,omitempty"`
	SHA256    string  `json:"sha256,omitempty"`
	CRC64NVME string  `json:"crc64nvme,omitempty"`
	CRC32C    string  `json:"crc32c,omitempty"`
	MD5       string  `json:"md5,omitempty"`
	Chunk     int64   `json:"chunk"`
	Done      []int64 `json:"done"`
}

// open opens the partial file part (never truncating one whose saved state
// matches the listing: the fetch resumes there) and plans its ranges.
func (j *fileJob) open(part string, chunk int64) error {
	j.notify = make(chan struct{}, 1)
	j.finished = make(chan struct{})
	j.statePath = part + ".state"
	if err := os.MkdirAll(filepath.Dir(part), 0o755); err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	switch {
	case j.f.Size < 0:
		j.ranges = []span{{0, -1}}
	case j.f.Size == 0:
		j.ranges = nil
	default:
		for off := int64(0); off < j.f.Size; off += chunk {
			j.ranges = append(j.ranges, span{off, min(chunk, j.f.Size-off)})
		}
	}
	j.doneB = make([]atomic.Int64, len(j.ranges))
	fh, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	j.part = fh
	want := j.state(chunk)
	if b, err := os.ReadFile(j.statePath); err == nil {
		var st partState
		if json.Unmarshal(b, &st) == nil && len(st.Done) == len(j.ranges) &&
			st.Size == want.Size && st.Version == want.Version && st.SHA256 == want.SHA256 && st.CRC64NVME == want.CRC64NVME &&
			st.CRC32C == want.CRC32C && st.MD5 == want.MD5 && st.Chunk == want.Chunk {
			if fi, err := fh.Stat(); err == nil && (j.f.Size < 0 || fi.Size() == j.f.Size) {
				for i, d := range st.Done {
					if d >= 0 && (j.ranges[i].length < 0 || d <= j.ranges[i].length) {
						j.doneB[i].Store(d)
					}
				}
				return nil
			}
		}
	}
	// No usable state: start the partial file afresh. Only a partial file is
	// ever truncated, never a file in place.
	if err := j.truncate(); err != nil {
		return err
	}
	return j.saveState()
}

func (j *fileJob) truncate() error {
	if err := j.part.Truncate(0); err != nil {
		return &Error{Kind: KindDisk, Err: err}
	}
	if j.f.Size > 0 {
		// Sparse until written; the free-space check ran before.
		if err := j.part.Truncate(j.f.Size); err != nil {
			return &Error{Kind: KindDisk, Err: err}
		}
	}
	for i := range j.doneB {
		j.doneB[i].Store(0)
	}
	return nil
}

// saveState records how far each range has come; a restart resumes there.
func (j *fileJob) saveState() error {
	j.saveMu.Lock()
	defer j.saveMu.Unlock()
	var chunk int64
	if len(j.ranges) > 0 {
		chunk = j.ranges[0].length
	}
	st := j.state(chunk)
	st.Done = make([]int64, len(j.ranges))
	for i := range j.doneB {
		st.Done[i] = j.doneB[i].Load()
	}
	b, _ := json.Marshal(st)
	return writeFileAtomic(j.statePath, b)
}

// state is the resume state of the listed file with no progress.
func (j *fileJob) state(chunk int64) partState {
	return partState{Size: j.f.Size, Version: j.f.Version, SHA256: j.f.SHA256, CRC64NVME: j.f.CRC64NVME,
		CRC32C: j.f.CRC32C, MD5: j.f.MD5, Chunk: chunk}
}

func (j *fileJob) close() {
	if j.part != nil {
		j.part.Close()
	}
}

func (j *fileJob) resumed() int64 {
	var n int64
	for i := range j.doneB {
		n += j.doneB[i].Load()
	}
	return n
}

func (j *fileJob) start(i int) int64  { return j.ranges[i].start }
func (j *fileJob) length(i int) int64 { return j.ranges[i].length }
func (j *fileJob) done(i int) int64   { return j.doneB[i].Load() }

func (j *fileJob) rangeDone(i int) bool {
	return j.ranges[i].length >= 0 && j.doneB[i].Load() == j.ranges[i].length
}

// remaining is the offset and length still to fetch of range i (length -1:
// to the end).
func (j *fileJob) remaining(i int) (int64, int64) {
	r, d := j.ranges[i], j.doneB[i].Load()
	if r.length < 0 {
		return r.start + d, -1
	}
	return r.start + d, r.length - d
}

func (j *fileJob) advance(i int, k int64) {
	j.doneB[i].Add(k)
	select {
	case j.notify <- struct{}{}:
	default:
	}
}

// landed records that one of the ranges handed to the workers is complete;
// after the last, no more writes come, and the file's check need not wait
// for other files' ranges.
func (j *fileJob) landed() {
	if j.pending.Add(-1) == 0 {
		j.firstWritesDone()
	}
}

// firstWritesDone ends the first round of writes, once: the last range
// landing and the end of all fetching both call it, and a refetch after a
// failed check (restartWrites) must not be ended by the second.
func (j *fileJob) firstWritesDone() { j.firstDone.Do(j.writesDone) }

// writesDone says no more writes come (until restartWrites).
func (j *fileJob) writesDone() {
	j.mu.Lock()
	defer j.mu.Unlock()
	select {
	case <-j.finished:
	default:
		close(j.finished)
	}
}

func (j *fileJob) restartWrites() {
	j.mu.Lock()
	j.finished = make(chan struct{})
	j.mu.Unlock()
}

func (j *fileJob) finishedCh() chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.finished
}

// prefix is how many bytes from the start are written without a gap.
func (j *fileJob) prefix() int64 {
	var p int64
	for i, r := range j.ranges {
		d := j.doneB[i].Load()
		p = r.start + d
		if r.length < 0 || d < r.length {
			return p
		}
	}
	return p
}

// hashBehind hashes the partial file as its gap-free prefix grows, reading
// behind the writers (from the page cache, in practice), until no more
// writes come. It returns the digest (the one checked) and the size hashed.
func (j *fileJob) hashBehind(ctx context.Context) (digest, int64, error) {
	// Only the digest that is checked is computed (see checked).
	want := checked(j.f)
	h := want.newHash()
	var hashed int64
	for {
		fin := j.finishedCh()
		finished := false
		select {
		case <-fin:
			finished = true
		default:
		}
		p := j.prefix()
		// A buffer only while there is something to hash: a model of
		// thousands of files has as many of these loops waiting.
		var buf *[]byte
		if hashed < p && h != nil {
			buf = bufPool.Get().(*[]byte)
		}
		if h == nil {
			hashed = p // nothing to hash: only the size is checked
		}
		for hashed < p {
			k := int(min(int64(len(*buf)), p-hashed))
			n, err := j.part.ReadAt((*buf)[:k], hashed)
			if n > 0 {
				h.Write((*buf)[:n])
				hashed += int64(n)
			}
			if err != nil && n == 0 {
				bufPool.Put(buf)
				return digest{}, 0, &Error{Kind: KindDisk, Err: fmt.Errorf("reading back %s: %w", j.f.Path, err)}
			}
		}
		if buf != nil {
			bufPool.Put(buf)
		}
		if finished {
			if j.f.Size >= 0 && hashed != j.f.Size {
				if err := context.Cause(ctx); err != nil {
					return digest{}, 0, err
				}
				return digest{}, 0, Errorf(KindInternal, "%s: %d of %d bytes written", j.f.Path, hashed, j.f.Size)
			}
			if h == nil {
				return digest{}, hashed, nil
			}
			return digest{want.algo, hex.EncodeToString(h.Sum(nil))}, hashed, nil
		}
		select {
		case <-j.notify:
		case <-fin:
		case <-ctx.Done():
			// Another file failed: wait for the writers to stop; a file
			// that is complete all the same is still checked and kept, so
			// that a restart does not fetch it again.
			<-fin
		}
	}
}

// check compares what was written with what the source said.
func (j *fileJob) check(d digest, size int64) error {
	switch want := checked(j.f); {
	case j.f.Size >= 0 && size != j.f.Size:
		return fmt.Errorf("%s: size %d bytes, the source says %d", j.f.Path, size, j.f.Size)
	case d != want:
		return fmt.Errorf("%s: %s %s, the source says %s", j.f.Path, want.algo, d.hex, want.hex)
	}
	return nil
}

// reset discards everything written, to fetch the file again.
func (j *fileJob) reset() error {
	if err := j.truncate(); err != nil {
		return err
	}
	return j.saveState()
}
