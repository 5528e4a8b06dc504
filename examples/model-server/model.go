package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Model is what the server learned from the model directory at start.
type Model struct {
	URI      string
	Revision string
	// Files are sorted by path, with the sha256 of the bytes on disk.
	Files []modelload.ManifestFile
	Bytes int64
	// Digest is "sha256:" and the hex SHA-256 of the lines
	// "<path> <sha256> <size>\n" of Files, in path order: one value that
	// changes when any file does.
	Digest string
}

// LoadModel reads the loader's manifest at manifest and checks every file
// it lists against dir: present, a regular file inside dir, of the listed
// size and, where the manifest has one, of the listed sha256. Each file is
// read once, for its sha256.
func LoadModel(dir, manifest string) (*Model, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return nil, fmt.Errorf("reading the model manifest: %w", err)
	}
	var mf modelload.Manifest
	if err := json.Unmarshal(b, &mf); err != nil {
		return nil, fmt.Errorf("model manifest %s: %w", manifest, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	defer root.Close()

	m := &Model{URI: mf.URI, Revision: mf.Revision}
	seen := map[string]bool{}
	for _, f := range mf.Files {
		if seen[f.Path] {
			return nil, fmt.Errorf("model manifest %s lists %s twice", manifest, f.Path)
		}
		seen[f.Path] = true
		sum, size, err := hashFile(root, f.Path)
		if err != nil {
			return nil, err
		}
		if size != f.Size {
			return nil, fmt.Errorf("%s: %d bytes, the manifest says %d", f.Path, size, f.Size)
		}
		if f.SHA256 != "" && sum != f.SHA256 {
			return nil, fmt.Errorf("%s: sha256 %s, the manifest says %s", f.Path, sum, f.SHA256)
		}
		m.Files = append(m.Files, modelload.ManifestFile{Path: f.Path, Size: size, SHA256: sum})
		m.Bytes += size
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	var lines strings.Builder
	for _, f := range m.Files {
		fmt.Fprintf(&lines, "%s %s %d\n", f.Path, f.SHA256, f.Size)
	}
	d := sha256.Sum256([]byte(lines.String()))
	m.Digest = "sha256:" + hex.EncodeToString(d[:])
	return m, nil
}

// hashFile is the sha256 and size of the regular file p (slash-separated)
// under root; root refuses paths that leave it.
func hashFile(root *os.Root, p string) (string, int64, error) {
	f, err := root.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !st.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s: not a regular file", p)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
