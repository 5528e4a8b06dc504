// Package modeltest makes deterministic test models and checks a loaded
// directory against them byte for byte. Shared by the source packages'
// tests, the loader's end-to-end tests and the benchmarks.
package modeltest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/mlplane/mlplane/internal/api"
)

// Model is a model's files: slash-separated path to content.
type Model map[string][]byte

// New returns a model with the given files and sizes in bytes, each file's
// content pseudo-random from seed and its path (the same on every call).
func New(seed uint64, sizes map[string]int) Model {
	m := Model{}
	for p, n := range sizes {
		h := sha256.Sum256([]byte(p))
		r := rand.New(rand.NewPCG(seed, uint64(h[0])|uint64(h[1])<<8|uint64(h[2])<<16|uint64(h[3])<<24))
		b := make([]byte, n)
		for i := 0; i+8 <= n; i += 8 {
			v := r.Uint64()
			for j := range 8 {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		for i := n - n%8; i < n; i++ {
			b[i] = byte(r.Uint32())
		}
		m[p] = b
	}
	return m
}

// Small is a typical small multi-file model: two safetensors shards, a
// config, a tokenizer and a file in a subdirectory; 3 MiB in all.
func Small() Model {
	return New(1, map[string]int{
		"config.json":                      517,
		"tokenizer.json":                   70_001,
		"model-00001-of-00002.safetensors": 2<<20 + 13,
		"model-00002-of-00002.safetensors": 1<<20 - 7,
		"onnx/model.onnx":                  33_333,
		"README.md":                        0,
	})
}

// SHA256 is the hex SHA-256 of b.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Paths are the model's paths, sorted.
func (m Model) Paths() []string {
	ps := make([]string, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Size is the total of the model's file sizes.
func (m Model) Size() int64 {
	var n int64
	for _, b := range m {
		n += int64(len(b))
	}
	return n
}

// CheckDir fails t unless dir holds exactly the model's files, byte for
// byte, plus the loader's manifest (api.ModelManifestFile); any other entry
// (a leftover partial file) fails too.
func CheckDir(t testing.TB, dir string, want Model) {
	t.Helper()
	got := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == api.ModelManifestFile {
			return nil
		}
		got[rel] = true
		w, ok := want[rel]
		if !ok {
			t.Errorf("unexpected file %s in %s", rel, dir)
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, w) {
			t.Errorf("%s: content differs: %d bytes, sha256 %s; want %d bytes, sha256 %s", rel, len(b), SHA256(b), len(w), SHA256(w))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	var missing []string
	for p := range want {
		if !got[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("missing from %s: %s", dir, strings.Join(missing, ", "))
	}
	if _, err := os.Stat(filepath.Join(dir, api.ModelManifestFile)); err != nil {
		t.Errorf("no manifest: %v", err)
	}
}
