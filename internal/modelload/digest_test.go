package modelload

import (
	"encoding/hex"
	"testing"
)

// TestDigestCheckValues pins each algorithm the engine computes to its
// catalogue check value (the digest of "123456789"; for the CRCs, the
// CRC RevEng catalogue's CRC-64/NVME and CRC-32/ISCSI), so that a hash of
// the wrong polynomial or byte order cannot pass against itself.
func TestDigestCheckValues(t *testing.T) {
	for algo, want := range map[string]string{
		"sha256":    "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
		"crc64nvme": "ae8b14860a799888",
		"crc32c":    "e3069283",
		"md5":       "25f9e794323b453885f5181f1b624d0b",
	} {
		h := digest{algo: algo}.newHash()
		h.Write([]byte("123456789"))
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Errorf("%s(123456789) = %s, want %s", algo, got, want)
		}
	}
	if h := (digest{}).newHash(); h != nil {
		t.Errorf("no digest: hash %T, want none", h)
	}
}

// TestCheckedOrder: the digest checked is the source's SHA-256, else its
// CRC-64/NVME, else its CRC-32C, else its MD5.
func TestCheckedOrder(t *testing.T) {
	all := File{SHA256: "s", CRC64NVME: "n", CRC32C: "c", MD5: "m"}
	for _, c := range []struct {
		f    File
		want digest
	}{
		{all, digest{"sha256", "s"}},
		{File{CRC64NVME: "n", CRC32C: "c", MD5: "m"}, digest{"crc64nvme", "n"}},
		{File{CRC32C: "c", MD5: "m"}, digest{"crc32c", "c"}},
		{File{MD5: "m"}, digest{"md5", "m"}},
		{File{}, digest{}},
	} {
		if got := checked(c.f); got != c.want {
			t.Errorf("checked(%+v) = %+v, want %+v", c.f, got, c.want)
		}
	}
}
