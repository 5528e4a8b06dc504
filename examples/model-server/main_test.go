package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// writeModel writes files into a new directory with the loader's manifest,
// as model-loader leaves it, and returns the directory.
func writeModel(t *testing.T, files modeltest.Model, edit func(*modelload.Manifest)) string {
	t.Helper()
	dir := t.TempDir()
	m := modelload.Manifest{APIVersion: "mlplane.io/v1alpha1", Kind: "ModelManifest", URI: "hf://org/model", Revision: "0123abcd"}
	for _, p := range files.Paths() {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, files[p], 0o644); err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, modelload.ManifestFile{Path: p, Size: int64(len(files[p])), SHA256: modeltest.SHA256(files[p])})
		m.Bytes += int64(len(files[p]))
	}
	if edit != nil {
		edit(&m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, api.ModelManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadModel(t *testing.T) {
	model := modeltest.Small()
	dir := writeModel(t, model, func(m *modelload.Manifest) {
		// The loader lists files in its own order; the server sorts them.
		m.Files[0], m.Files[len(m.Files)-1] = m.Files[len(m.Files)-1], m.Files[0]
	})
	m, err := LoadModel(dir, filepath.Join(dir, api.ModelManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var lines string
	for i, p := range model.Paths() {
		f := m.Files[i]
		if f.Path != p || f.Size != int64(len(model[p])) || f.SHA256 != modeltest.SHA256(model[p]) {
			t.Errorf("file %d: %+v, want %s, %d bytes, %s", i, f, p, len(model[p]), modeltest.SHA256(model[p]))
		}
		lines += fmt.Sprintf("%s %s %d\n", p, modeltest.SHA256(model[p]), len(model[p]))
	}
	if want := "sha256:" + modeltest.SHA256([]byte(lines)); m.Digest != want {
		t.Errorf("digest %s, want %s", m.Digest, want)
	}
	if m.Bytes != model.Size() || m.URI != "hf://org/model" || m.Revision != "0123abcd" {
		t.Errorf("bytes %d, uri %s, revision %s; want %d, hf://org/model, 0123abcd", m.Bytes, m.URI, m.Revision, model.Size())
	}
}

func TestLoadModelRefuses(t *testing.T) {
	files := modeltest.Model{"config.json": []byte(`{"a":1}`), "w/model.bin": []byte("0123456789")}
	for _, tc := range []struct {
		name string
		edit func(m *modelload.Manifest)
		want string
	}{
		{"missing file", func(m *modelload.Manifest) {
			m.Files = append(m.Files, modelload.ManifestFile{Path: "gone.bin", Size: 1})
		}, "gone.bin"},
		{"size differs", func(m *modelload.Manifest) { m.Files[1].Size = 11 }, "10 bytes, the manifest says 11"},
		{"sha256 differs", func(m *modelload.Manifest) { m.Files[0].SHA256 = strings.Repeat("0", 64) }, "sha256"},
		{"outside the directory", func(m *modelload.Manifest) {
			m.Files = append(m.Files, modelload.ManifestFile{Path: "../etc/passwd", Size: 1})
		}, "../etc/passwd"},
		{"a directory", func(m *modelload.Manifest) {
			m.Files = append(m.Files, modelload.ManifestFile{Path: "w", Size: 0})
		}, "not a regular file"},
		{"listed twice", func(m *modelload.Manifest) { m.Files = append(m.Files, m.Files[0]) }, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeModel(t, files, tc.edit)
			_, err := LoadModel(dir, filepath.Join(dir, api.ModelManifestFile))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadModel: %v, want an error with %q", err, tc.want)
			}
		})
	}
	t.Run("no manifest", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := LoadModel(dir, filepath.Join(dir, api.ModelManifestFile)); err == nil {
			t.Fatal("LoadModel without a manifest: no error")
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, api.ModelManifestFile)
		if err := os.WriteFile(p, []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadModel(dir, p); err == nil {
			t.Fatal("LoadModel with a broken manifest: no error")
		}
	})
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestServer(t *testing.T) {
	files := modeltest.Model{"w/model.bin": []byte("0123456789"), "config.json": []byte(`{"a":1}`)}
	dir := writeModel(t, files, nil)
	env := map[string]string{"NVIDIA_VISIBLE_DEVICES": "GPU-1,GPU-2", "POD_NAME": "p-0", "POD_NAMESPACE": "ml"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	s := NewServer(EnvFrom(lookup))

	if code, _ := get(t, s, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before the model: %d, want 200", code)
	}
	for _, p := range []string{"/", "/readyz"} {
		if code, _ := get(t, s, p); code != http.StatusServiceUnavailable {
			t.Errorf("%s before the model: %d, want 503", p, code)
		}
	}

	m, err := LoadModel(dir, filepath.Join(dir, api.ModelManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	s.SetModel(m)
	cfg, bin := modeltest.SHA256(files["config.json"]), modeltest.SHA256(files["w/model.bin"])
	digest := sha256.Sum256([]byte("config.json " + cfg + " 7\nw/model.bin " + bin + " 10\n"))
	// Keys sorted, files in path order, unset variables null.
	want := `{
  "bytes": 17,
  "digest": "sha256:` + hex.EncodeToString(digest[:]) + `",
  "files": [
    {
      "path": "config.json",
      "sha256": "` + cfg + `",
      "size": 7
    },
    {
      "path": "w/model.bin",
      "sha256": "` + bin + `",
      "size": 10
    }
  ],
  "gpuMemoryMiB": null,
  "namespace": "ml",
  "nvidiaVisibleDevices": "GPU-1,GPU-2",
  "pod": "p-0",
  "revision": "0123abcd",
  "uri": "hf://org/model"
}
`
	for i := 0; i < 2; i++ {
		code, body := get(t, s, "/")
		if code != http.StatusOK || body != want {
			t.Fatalf("GET / (%d): %d\n%s\nwant 200\n%s", i, code, body, want)
		}
	}
	if code, _ := get(t, s, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the model: %d, want 200", code)
	}
	if code, _ := get(t, s, "/other"); code != http.StatusNotFound {
		t.Errorf("/other: %d, want 404", code)
	}

	// An empty NVIDIA_VISIBLE_DEVICES ("no GPU") is not an unset one.
	env = map[string]string{"NVIDIA_VISIBLE_DEVICES": ""}
	r := NewResponse(m, EnvFrom(lookup))
	if r.NvidiaVisibleDevices == nil || *r.NvidiaVisibleDevices != "" || r.Pod != nil {
		t.Errorf("empty NVIDIA_VISIBLE_DEVICES and no POD_NAME: %+v", r)
	}
}

// TestRun starts the binary's run with a model, checks that it serves,
// and stops it; and that it refuses a broken model.
func TestRun(t *testing.T) {
	files := modeltest.Model{"config.json": []byte(`{"a":1}`)}
	dir := writeModel(t, files, nil)
	env := map[string]string{api.EnvModelDir: dir}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	addr := freeAddr(t)
	go func() { done <- run(ctx, []string{"--addr", addr}, lookup, &stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10s: %v; stderr: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(stderr.String(), "serving hf://org/model (1 files, 7 bytes") {
		t.Errorf("stderr: %s", stderr.String())
	}

	os.Remove(filepath.Join(dir, "config.json"))
	if err := run(context.Background(), []string{"--addr", freeAddr(t)}, lookup, io.Discard); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("run without the model's file: %v, want an error naming config.json", err)
	}
	if err := run(context.Background(), nil, func(string) (string, bool) { return "", false }, io.Discard); err == nil || !strings.Contains(err.Error(), api.EnvModelDir) {
		t.Errorf("run without a model directory: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close()
	return addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
