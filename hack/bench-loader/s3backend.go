package main

import (
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/minio/crc64nvme"
)

// diskBackend is a read-only gofakes3 backend: one bucket whose objects are
// the model's files, served from disk. GetObject returns the file section
// as an io.WriterTo over an *io.LimitedReader of the *os.File, so that
// gofakes3's io.Copy into the ResponseWriter ends in net/http's sendfile
// path: the server copies no byte itself and cannot be what limits a
// client (the ceiling phase measures it). ETags are the files' MD5, as S3
// gives for single-part uploads; with crc, HEAD and GET also send a
// full-object CRC64NVME checksum, as S3 does for every object uploaded
// since 2025 (checksum mode is not checked: S3 sends it only when asked).
type diskBackend struct {
	bucket  string
	created time.Time
	objects map[string]*diskObject
	keys    []string // sorted
}

type diskObject struct {
	path  string
	size  int64
	md5   []byte
	mtime time.Time
	crc   string // base64 CRC64NVME, "" when none
}

// newDiskBackend serves files (model paths, slash-separated) under prefix
// ("dir/") of bucket, from dir.
func newDiskBackend(bucket, prefix, dir string, files []modelFile, crc bool) (*diskBackend, error) {
	b := &diskBackend{bucket: bucket, created: time.Now().UTC().Truncate(time.Second), objects: map[string]*diskObject{}}
	for _, f := range files {
		key := prefix + f.Path
		o := &diskObject{path: filepath.Join(dir, filepath.FromSlash(f.Path)), size: f.Size, md5: f.md5, mtime: b.created}
		if crc {
			sum, err := crc64nvmeOf(o.path)
			if err != nil {
				return nil, err
			}
			o.crc = base64.StdEncoding.EncodeToString(sum)
		}
		b.objects[key] = o
		b.keys = append(b.keys, key)
	}
	sort.Strings(b.keys)
	return b, nil
}

func crc64nvmeOf(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := crc64nvme.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

var errReadOnly = gofakes3.ErrNotImplemented

func (b *diskBackend) ListBuckets() ([]gofakes3.BucketInfo, error) {
	return []gofakes3.BucketInfo{{Name: b.bucket, CreationDate: gofakes3.NewContentTime(b.created)}}, nil
}

func (b *diskBackend) ListBucket(name string, prefix *gofakes3.Prefix, page gofakes3.ListBucketPage) (*gofakes3.ObjectList, error) {
	if name != b.bucket {
		return nil, gofakes3.BucketNotFound(name)
	}
	if prefix == nil {
		prefix = &gofakes3.Prefix{}
	}
	out := gofakes3.NewObjectList()
	var match gofakes3.PrefixMatch
	var cnt int64
	lastCommon := ""
	for i, key := range b.keys {
		if page.HasMarker && key <= page.Marker {
			continue
		}
		if !prefix.Match(key, &match) {
			continue
		}
		if match.CommonPrefix {
			if match.MatchedPart == lastCommon {
				continue
			}
			out.AddPrefix(match.MatchedPart)
			lastCommon = match.MatchedPart
		} else {
			o := b.objects[key]
			out.Add(&gofakes3.Content{Key: key, LastModified: gofakes3.NewContentTime(o.mtime), ETag: gofakes3.FormatETag(o.md5), Size: o.size, StorageClass: "STANDARD"})
		}
		cnt++
		if page.MaxKeys > 0 && cnt >= page.MaxKeys {
			out.NextMarker = key
			out.IsTruncated = i+1 < len(b.keys)
			break
		}
	}
	return out, nil
}

func (b *diskBackend) CreateBucket(name string) error {
	if name == b.bucket {
		return gofakes3.ResourceError(gofakes3.ErrBucketAlreadyExists, name)
	}
	return errReadOnly
}

func (b *diskBackend) BucketExists(name string) (bool, error) { return name == b.bucket, nil }
func (b *diskBackend) DeleteBucket(string) error              { return errReadOnly }
func (b *diskBackend) ForceDeleteBucket(string) error         { return errReadOnly }

func (b *diskBackend) object(bucket, key string) (*diskObject, error) {
	if bucket != b.bucket {
		return nil, gofakes3.BucketNotFound(bucket)
	}
	o := b.objects[key]
	if o == nil {
		return nil, gofakes3.KeyNotFound(key)
	}
	return o, nil
}

func (b *diskBackend) meta(o *diskObject) map[string]string {
	m := map[string]string{
		"Last-Modified": o.mtime.Format(http.TimeFormat),
		"Content-Type":  "application/octet-stream",
	}
	if o.crc != "" {
		m["X-Amz-Checksum-Crc64nvme"] = o.crc
		m["X-Amz-Checksum-Type"] = "FULL_OBJECT"
	}
	return m
}

func (b *diskBackend) HeadObject(bucket, key string) (*gofakes3.Object, error) {
	o, err := b.object(bucket, key)
	if err != nil {
		return nil, err
	}
	return &gofakes3.Object{Name: key, Metadata: b.meta(o), Size: o.size, Contents: io.NopCloser(eofReader{}), Hash: o.md5}, nil
}

func (b *diskBackend) GetObject(bucket, key string, rr *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
	o, err := b.object(bucket, key)
	if err != nil {
		return nil, err
	}
	rng, err := rr.Range(o.size)
	if err != nil {
		return nil, err
	}
	start, n := int64(0), o.size
	if rng != nil {
		start, n = rng.Start, rng.Length
	}
	f, err := os.Open(o.path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return &gofakes3.Object{Name: key, Metadata: b.meta(o), Size: o.size, Contents: &fileSection{f: f, lr: io.LimitedReader{R: f, N: n}}, Hash: o.md5, Range: rng}, nil
}

func (b *diskBackend) DeleteObject(string, string) (gofakes3.ObjectDeleteResult, error) {
	return gofakes3.ObjectDeleteResult{}, errReadOnly
}

func (b *diskBackend) PutObject(string, string, map[string]string, io.Reader, int64, *gofakes3.PutConditions) (gofakes3.PutObjectResult, error) {
	return gofakes3.PutObjectResult{}, errReadOnly
}

func (b *diskBackend) DeleteMulti(string, ...string) (gofakes3.MultiDeleteResult, error) {
	return gofakes3.MultiDeleteResult{}, errReadOnly
}

func (b *diskBackend) CopyObject(string, string, string, string, map[string]string) (gofakes3.CopyObjectResult, error) {
	return gofakes3.CopyObjectResult{}, errReadOnly
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// fileSection is a section of an open file. WriteTo hands the
// *io.LimitedReader of the *os.File to the writer, which net/http's
// response (and countingWriter) turn into sendfile.
type fileSection struct {
	f  *os.File
	lr io.LimitedReader
}

func (s *fileSection) Read(p []byte) (int, error)         { return s.lr.Read(p) }
func (s *fileSection) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, &s.lr) }
func (s *fileSection) Close() error                       { return s.f.Close() }
