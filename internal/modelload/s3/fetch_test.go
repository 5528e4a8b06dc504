package s3source

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"strings"
	"testing"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// TestFetch loads modeltest.Small() from gofakes3 through the engine, in
// ranges small enough that the shards take several each.
func TestFetch(t *testing.T) {
	_, m := smallInBucket(t)
	const uri = "s3://models/llama"
	src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	res, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: uri, Dest: dest, ChunkSize: 256 << 10, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if res.Fetched != m.Size() || len(res.Manifest.Files) != len(m) || res.Manifest.Revision == "" {
		t.Errorf("fetched %d bytes, %d files, revision %q; want %d bytes, %d files", res.Fetched, len(res.Manifest.Files), res.Manifest.Revision, m.Size(), len(m))
	}
}

// TestFetchCRC64NVME loads objects carrying S3's full-object CRC64NVME
// checksum: the manifest records it as what was verified, and an object
// whose bytes do not match it fails the load with an integrity error
// (exit 7) after one more try, although its ETag (the MD5) matches.
func TestFetchCRC64NVME(t *testing.T) {
	f := newFakeS3(t)
	f.bucket(t, "models")
	m := modeltest.Small()
	nvme := crc64.MakeTable(0x9a6c9329ac4bc9b5)
	put := func(prefix string, lie bool) {
		for p, b := range m {
			sum := crc64.Checksum(b, nvme)
			if lie && p == "config.json" {
				sum ^= 1
			}
			f.put(t, "models", prefix+p, b, map[string]string{
				"X-Amz-Checksum-Crc64nvme": base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, sum)),
				"X-Amz-Checksum-Type":      "FULL_OBJECT",
			})
		}
	}
	put("good/", false)
	put("bad/", true)
	testEnv(t, f.srv.URL)
	load := func(uri string) (string, *modelload.Result, error) {
		src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dest := t.TempDir()
		res, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: uri, Dest: dest, ChunkSize: 256 << 10, Concurrency: 4, ProgressInterval: -1})
		return dest, res, err
	}
	dest, res, err := load("s3://models/good")
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	for _, mf := range res.Manifest.Files {
		want := fmt.Sprintf("%016x", crc64.Checksum(m[mf.Path], nvme))
		if mf.CRC64NVME != want || mf.MD5 != "" || mf.SHA256 != "" {
			t.Errorf("manifest %+v, want crc64nvme %s only", mf, want)
		}
	}
	_, _, err = load("s3://models/bad")
	var e *modelload.Error
	if !errors.As(err, &e) || e.Kind != modelload.KindIntegrity || !strings.Contains(err.Error(), "config.json: crc64nvme ") {
		t.Errorf("err %v; want KindIntegrity naming config.json's crc64nvme", err)
	}
}
