package hf_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/hf/fakehub"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// TestFetchSmall loads modeltest.Small() from a private repository with
// the engine, in small parallel chunks.
func TestFetchSmall(t *testing.T) {
	hub := startHub(t)
	m := modeltest.Small()
	sha := hub.MustAdd("org/model", fakehub.Repo{Files: m, Private: true, Tokens: []string{token}})
	src := newSource(t, hub, "hf://org/model", token)
	dest := t.TempDir()
	res, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: "hf://org/model", Dest: dest, ChunkSize: 256 << 10, ProgressInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if res.Manifest.Revision != sha {
		t.Errorf("manifest revision %s, want %s", res.Manifest.Revision, sha)
	}
	if a := hub.CDNAuthorizations(); len(a) != 0 {
		t.Errorf("the CDN received Authorization %q", a)
	}
}

// TestFetchThroughFaults: 429s with Retry-After and cut connections on the
// CDN are retried until the model is complete.
func TestFetchThroughFaults(t *testing.T) {
	hub := startHub(t)
	m := modeltest.Small()
	hub.MustAdd("org/model", fakehub.Repo{Files: m})
	var cut = fakehub.FailFirst(3, fakehub.Fault{After: 1000, Cut: true}, func(r fakehub.Request) bool { return r.Server == "cdn" })
	var busy = fakehub.FailFirst(3, fakehub.Fault{Status: http.StatusTooManyRequests, RetryAfter: "0"}, func(r fakehub.Request) bool { return r.Server == "hub" && r.Method == http.MethodGet })
	var mu sync.Mutex
	hits := map[string]int{}
	hub.SetFault(func(r fakehub.Request) *fakehub.Fault {
		f := busy(r)
		if f == nil {
			f = cut(r)
		}
		if f != nil {
			mu.Lock()
			hits[r.Server]++
			mu.Unlock()
		}
		return f
	})
	src := newSource(t, hub, "hf://org/model", "")
	dest := t.TempDir()
	_, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: "hf://org/model", Dest: dest, ChunkSize: 512 << 10,
		BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond, ProgressInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if hits["hub"] != 3 || hits["cdn"] != 3 {
		t.Errorf("faults hit: %v; want 3 429s from the hub and 3 cuts on the CDN", hits)
	}
}
