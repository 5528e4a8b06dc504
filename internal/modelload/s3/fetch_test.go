package s3source

import (
	"context"
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
