// Package modelload fetches a model, the files under one URI, into a
// directory: the logic of the model-loader init container the webhook
// injects (cmd/model-loader).
//
// A Source (one per URI scheme: s3, gs, hf, https, azblob, oci) lists the
// model's files and opens byte ranges of them; the Engine does everything
// else the same way for every scheme: allow/ignore patterns, the free-space
// check, parallel ranged downloads written straight to disk, resume after a
// restart, retries with backoff, stall detection, size and digest checks,
// atomic renames, the manifest written last, and the optional node-local
// cache.
package modelload

import (
	"context"
	"io"
)

// File is one file of a model as its source describes it.
type File struct {
	// Path is the file's name relative to the model root: slash-separated,
	// clean, never absolute and never containing "..". Sources build it
	// with CleanPath.
	Path string `json:"path"`
	// Size in bytes; -1 when the source cannot tell before the download
	// (an HTTPS server without Content-Length). A file of unknown size is
	// fetched in one stream.
	Size int64 `json:"size"`
	// SHA256 is the lower-case hex SHA-256 of the content, "" when the source
	// gives none (Hugging Face's X-Linked-Etag for LFS files, an S3
	// full-object SHA-256 checksum, an OCI layer digest).
	SHA256 string `json:"sha256,omitempty"`
	// CRC64NVME is the lower-case hex of the content's CRC-64/NVME (the 8
	// bytes big-endian, as S3's base64 checksum decodes), "" when the source
	// gives none (an S3 full-object checksum, which S3 adds to every object
	// uploaded since 2025 unless the client chose another algorithm).
	// Checked when SHA256 is empty.
	CRC64NVME string `json:"crc64nvme,omitempty"`
	// CRC32C is the lower-case hex of the content's CRC-32C (Castagnoli; 4
	// bytes big-endian), "" when the source gives none (an S3 full-object
	// checksum). Checked when SHA256 and CRC64NVME are empty.
	CRC32C string `json:"crc32c,omitempty"`
	// MD5 is the lower-case hex MD5 of the content, "" when the source gives
	// none (GCS md5Hash, Azure Content-MD5, an S3 single-part ETag).
	// Checked only when the source gives no other digest: MD5 costs the
	// loader more CPU than every other step together.
	MD5 string `json:"md5,omitempty"`
	// Version is the source's version of this object (an ETag, a GCS
	// generation, a git blob id), "" when none. Sources may use it to make
	// every range of one download come from the same object version.
	Version string `json:"-"`
	// Key is the source's own name for the object (an S3 key, a layer
	// digest); the engine hands it back to Open untouched.
	Key string `json:"-"`
}

// Listing is what a Source says a model is.
type Listing struct {
	// Revision is the resolved, immutable revision of the whole model: a
	// Hugging Face commit sha, an OCI manifest digest, or (for stores
	// without one) a digest of the listed names, sizes and versions. It is
	// recorded in the manifest and keys the node cache.
	Revision string
	// Files are the model's files, in any order; the engine sorts them.
	Files []File
	// Archive, when set, says the single listed file is a .tar, .tar.gz,
	// .tgz or .zip archive to unpack into the destination (https://).
	Archive bool
}

// Source reads one model. Implementations must be safe for concurrent use:
// the engine calls Open from many goroutines at once.
type Source interface {
	// List resolves the model's revision and lists its files. Errors carry
	// a Kind (see Errorf): a missing bucket or repository is KindNotFound,
	// refused credentials KindAuth.
	List(ctx context.Context) (*Listing, error)
	// Open returns the bytes [off, off+n) of f, or [off, end) when n < 0.
	// Cancelling ctx must abort a blocked read. A retryable failure (a 5xx,
	// a 429, a reset connection) is returned as an *Error with Retry set,
	// and RetryAfter when the server asked for a delay.
	Open(ctx context.Context, f File, off, n int64) (io.ReadCloser, error)
}
