package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func tarGz(t *testing.T, m modeltest.Model) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, p := range m.Paths() {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(m[p])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(m[p])
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// The loader reads MODEL_URI and MODEL_DIR as the webhook sets them,
// unpacks an archive, and exits 0.
func TestRunLoadsArchiveFromEnv(t *testing.T) {
	m := modeltest.Small()
	body := tarGz(t, m)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "model.tar.gz", modtime, bytes.NewReader(body))
	}))
	defer srv.Close()
	dest := t.TempDir()
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"--progress-interval=0", "--termination-log="}, env(map[string]string{
		api.EnvModelURI: srv.URL + "/models/model.tar.gz", api.EnvModelDir: dest,
	}), &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	modeltest.CheckDir(t, dest, m)
	if !strings.Contains(stderr.String(), `"model loaded"`) {
		t.Errorf("no summary line in the log:\n%s", stderr.String())
	}
}

// Each kind of failure has its exit code and one line naming the URI
// (credentials redacted), also in the termination log.
func TestRunFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/private"):
			http.Error(w, "no", http.StatusForbidden)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name string
		args []string
		code int
		line string
	}{
		{"scheme", []string{"--uri=ftp://host/m", "--dest=D"}, 2, `model-loader: bad input: model URI "ftp://host/m": unsupported scheme "ftp"; want `},
		{"no dest", []string{"--uri=s3://b/m"}, 2, "model-loader: bad input: both a model URI and a destination directory are required"},
		{"quantity", []string{"--uri=s3://b/m", "--dest=D", "--volume-size=lots"}, 2, `model-loader: bad input: --volume-size="lots": want a non-negative quantity such as 64Mi or 500Gi`},
		{"not found", []string{"--uri=" + srv.URL + "/m.bin?token=SECRET", "--dest=D"}, 4, "model-loader: not found: "},
		{"denied", []string{"--uri=http://user:SECRET@" + host + "/private/m.bin", "--dest=D"}, 3, "model-loader: access denied: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := t.TempDir()
			tlog := filepath.Join(t.TempDir(), "termination-log")
			os.WriteFile(tlog, nil, 0o644)
			args := []string{"--termination-log=" + tlog, "--progress-interval=0", "--retries=1"}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "=D", "="+dest))
			}
			var stderr bytes.Buffer
			code := run(context.Background(), args, env(nil), &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d: %s", code, tc.code, stderr.String())
			}
			out := stderr.String()
			if !strings.Contains(out, tc.line) || strings.Contains(out, "SECRET") {
				t.Errorf("stderr %q: want a line starting %q and no credentials", out, tc.line)
			}
			b, _ := os.ReadFile(tlog)
			if !strings.HasPrefix(string(b), tc.line) || strings.Count(string(b), "\n") != 1 || strings.Contains(string(b), "SECRET") {
				t.Errorf("termination log %q", b)
			}
		})
	}
}

var modtime = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
