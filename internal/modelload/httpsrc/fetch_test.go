package httpsrc_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/archive"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

func tgz(t *testing.T, m modeltest.Model) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, p := range m.Paths() {
		if err := tw.WriteHeader(&tar.Header{Name: "./" + p, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(m[p]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(m[p])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFetchArchive loads modeltest.Small() packed as a .tar.gz, in ranges,
// and unpacks it.
func TestFetchArchive(t *testing.T) {
	m := modeltest.Small()
	fs := &fileServer{data: tgz(t, m), etag: `"tgz1"`}
	uri := serve(t, fs) + "/releases/model.tar.gz?sig=abc"
	src := newSource(t, uri)
	dest := t.TempDir()
	res, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: uri, Dest: dest, ChunkSize: 256 << 10, Unpack: archive.Unpack, ProgressInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if res.Manifest.Revision != "tgz1" {
		t.Errorf("revision %q, want the ETag's value", res.Manifest.Revision)
	}
	ranged := 0
	for _, s := range fs.seen() {
		if s.method == http.MethodGet && s.rng != "" {
			ranged++
		}
	}
	if ranged < 2 {
		t.Errorf("%d ranged GETs; want the archive fetched in parallel ranges", ranged)
	}
}

// TestFetchWithoutRanges loads a file from a server that ignores Range:
// listed with Size -1, it is fetched in one stream.
func TestFetchWithoutRanges(t *testing.T) {
	data := modeltest.New(8, map[string]int{"f": 3<<20 + 5})["f"]
	fs := &fileServer{data: data, noRanges: true}
	uri := serve(t, fs) + "/model.safetensors"
	dest := t.TempDir()
	if _, err := modelload.Fetch(context.Background(), newSource(t, uri), modelload.Options{URI: uri, Dest: dest, ChunkSize: 1 << 20, ProgressInterval: -1}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dest, "model.safetensors"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("model.safetensors: %d bytes, %v; want the %d served", len(got), err, len(data))
	}
}
