package modelload

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// The second pod of a model on a node reads nothing from the source but
// the listing; two pods at once fetch it once.
func TestCacheSecondLoadMovesNoBytes(t *testing.T) {
	m := modeltest.Small()
	src := &memSource{m: m, digest: "sha256"}
	cache := &Cache{Dir: t.TempDir()}
	var wg sync.WaitGroup
	results := make([]*Result, 3)
	errs := make([]error, 3)
	dests := make([]string, 3)
	for i := range 3 {
		dests[i] = t.TempDir()
		wg.Go(func() { results[i], errs[i] = cache.Load(context.Background(), src, fetchOpts(t, dests[i])) })
	}
	wg.Wait()
	var fetched int64
	for i := range 3 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		modeltest.CheckDir(t, dests[i], m)
		fetched += results[i].Fetched
	}
	if fetched != m.Size() {
		t.Errorf("three loads fetched %d bytes in all; want %d (one fetch)", fetched, m.Size())
	}
	opens := src.opens.Load()
	d := t.TempDir()
	res, err := cache.Load(context.Background(), src, fetchOpts(t, d))
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, d, m)
	if res.Fetched != 0 || src.opens.Load() != opens {
		t.Errorf("cache hit fetched %d bytes, %d opens", res.Fetched, src.opens.Load()-opens)
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	cache := &Cache{Dir: dir, MaxBytes: 5 << 20}
	a, b := modeltest.Small(), modeltest.New(2, map[string]int{"w.bin": 3 << 20})
	load := func(m modeltest.Model, uri string) {
		t.Helper()
		o := fetchOpts(t, t.TempDir())
		o.URI = uri
		if _, err := cache.Load(context.Background(), &memSource{m: m}, o); err != nil {
			t.Fatal(err)
		}
	}
	load(a, "mem://a")
	load(b, "mem://b") // 3.1 + 3 MiB > 5 MiB: a goes
	if _, err := os.Stat(filepath.Join(dir, cacheKey("mem://a", "rev1", nil, nil))); !os.IsNotExist(err) {
		t.Errorf("the older entry was not evicted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, cacheKey("mem://b", "rev1", nil, nil), ManifestName)); err != nil {
		t.Errorf("the newest entry was evicted: %v", err)
	}
}
