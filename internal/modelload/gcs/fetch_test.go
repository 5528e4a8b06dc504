package gcs

import (
	"bytes"
	"compress/gzip"
	"context"
	"testing"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// TestFetch loads modeltest.Small() from fake-gcs-server through the
// engine, in ranges small enough that the shards take several each.
func TestFetch(t *testing.T) {
	f, m := smallInBucket(t)
	const uri = "gs://models/llama"
	src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{Getenv: emulator(f.srv.URL()).get})
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

// TestFetchGzipEncoded: an object stored with Content-Encoding: gzip is
// listed with an unknown size and lands decompressed, as gsutil saves it.
func TestFetchGzipEncoded(t *testing.T) {
	plain := bytes.Repeat([]byte(`{"vocab": "tokenizer"} `), 5000)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(plain)
	zw.Close()
	o := obj("enc", "m/tokenizer.json", z.Bytes())
	o.ContentEncoding = "gzip"
	weights := modeltest.New(7, map[string]int{"w.bin": 600_000})
	f := newFakeGCS(t, o, obj("enc", "m/w.bin", weights["w.bin"]))
	const uri = "gs://enc/m"
	src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{Getenv: emulator(f.srv.URL()).get})
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	if _, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: uri, Dest: dest, ChunkSize: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, modeltest.Model{"tokenizer.json": plain, "w.bin": weights["w.bin"]})
}
