package modelload

import (
	"crypto/md5"
	"crypto/sha256"
	"hash"
	"hash/crc32"

	"github.com/minio/crc64nvme"
)

// digest is one hex digest of a file and its algorithm: "sha256",
// "crc64nvme", "crc32c", "md5", or "" for none.
type digest struct{ algo, hex string }

// checked is the one digest of f that the engine computes and compares: the
// source's SHA-256, else its CRC-64/NVME, else its CRC-32C, else its MD5,
// else none (the size alone is checked). Only one is computed: MD5 costs
// about 1.5 CPU seconds per GB, SHA-256 with SHA-NI a third of that, the
// CRCs (PCLMULQDQ, SSE4.2) almost nothing.
func checked(f File) digest {
	switch {
	case f.SHA256 != "":
		return digest{"sha256", f.SHA256}
	case f.CRC64NVME != "":
		return digest{"crc64nvme", f.CRC64NVME}
	case f.CRC32C != "":
		return digest{"crc32c", f.CRC32C}
	case f.MD5 != "":
		return digest{"md5", f.MD5}
	}
	return digest{}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// newHash returns a hash of d's algorithm, nil when d is none.
func (d digest) newHash() hash.Hash {
	switch d.algo {
	case "sha256":
		return sha256.New()
	case "crc64nvme":
		return crc64nvme.New()
	case "crc32c":
		return crc32.New(castagnoli)
	case "md5":
		return md5.New()
	}
	return nil
}

// of returns m's digest of d's algorithm.
func (d digest) of(m ManifestFile) digest {
	v := map[string]string{"sha256": m.SHA256, "crc64nvme": m.CRC64NVME, "crc32c": m.CRC32C, "md5": m.MD5}[d.algo]
	return digest{d.algo, v}
}

// manifestFile is the manifest's entry of a file of size bytes verified
// against d.
func (d digest) manifestFile(path string, size int64) ManifestFile {
	m := ManifestFile{Path: path, Size: size}
	switch d.algo {
	case "sha256":
		m.SHA256 = d.hex
	case "crc64nvme":
		m.CRC64NVME = d.hex
	case "crc32c":
		m.CRC32C = d.hex
	case "md5":
		m.MD5 = d.hex
	}
	return m
}
