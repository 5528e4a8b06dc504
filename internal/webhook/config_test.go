package webhook

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/go-logr/logr"

	"github.com/mlplane/mlplane/internal/mutate"
)

const header = "apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\n"

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	// Write then rename, as a ConfigMap volume update does: the file is never
	// seen half written.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func loaderImage(s *ConfigSource) string { return s.Mutator().Config().Loader.Image }

func TestConfigReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, path, header+"loader: {image: loader:1}\n")
	metrics := NewMetrics(nil)
	s, err := NewConfigSource(path, "", metrics, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if got := loaderImage(s); got != "loader:1" {
		t.Fatalf("image %q", got)
	}

	// Unchanged file: nothing happens.
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("unchanged reload: %v %v", changed, err)
	}

	// A valid change is applied.
	writeConfig(t, path, header+"loader: {image: loader:2}\n")
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("reload: %v %v", changed, err)
	}
	if got := loaderImage(s); got != "loader:2" {
		t.Fatalf("image %q after reload", got)
	}
	// The first load counts, as every version taken does (filereload).
	if n := testutil.ToFloat64(metrics.reloads[true]); n != 2 {
		t.Errorf("success count %v, want 2", n)
	}

	// An invalid file keeps the running config and is counted.
	before := s.Mutator()
	writeConfig(t, path, header+"loader: {image: loader:3}\ndefaultProfile: nope\n")
	_, err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), `defaultProfile: Unsupported value: "nope"`) {
		t.Fatalf("error = %v", err)
	}
	if s.Mutator() != before || loaderImage(s) != "loader:2" {
		t.Fatalf("an invalid file replaced the config")
	}
	if n := testutil.ToFloat64(metrics.reloads[false]); n != 1 {
		t.Errorf("failure count %v", n)
	}
	// The same invalid version is not counted again.
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("the same invalid file again: %v %v", changed, err)
	}
	if n := testutil.ToFloat64(metrics.reloads[false]); n != 1 {
		t.Errorf("failure count %v after the same invalid file, want 1", n)
	}
}

func TestConfigInvalidAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, path, header+"loader: {imagePullPolicy: Sometimes}\n")
	if _, err := NewConfigSource(path, "", NewMetrics(nil), logr.Discard()); err == nil ||
		!strings.Contains(err.Error(), "loader.imagePullPolicy") {
		t.Fatalf("error = %v", err)
	}
	if _, err := NewConfigSource(filepath.Join(t.TempDir(), "missing.yaml"), "", NewMetrics(nil), logr.Discard()); err == nil {
		t.Fatal("a missing file was accepted")
	}
	s, err := NewConfigSource("", "", NewMetrics(nil), logr.Discard())
	if err != nil || loaderImage(s) != mutate.DefaultLoaderImage {
		t.Fatalf("built-in config: %v", err)
	}
}

// TestConfigWatch: a running source picks up a changed file by itself.
func TestConfigWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	writeConfig(t, path, header+"loader: {image: loader:1}\n")
	s, err := NewConfigSource(path, "", NewMetrics(nil), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	s.PollInterval = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	writeConfig(t, path, header+"loader: {image: loader:2}\n")
	// Wait for the change (an event or the next poll), up to a generous bound.
	deadline := time.Now().Add(30 * time.Second)
	for loaderImage(s) != "loader:2" {
		if time.Now().After(deadline) {
			t.Fatal("the changed file was not picked up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
