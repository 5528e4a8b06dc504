package main

import (
	"bufio"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// modelFile is one file of the benchmark model.
type modelFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	MD5    string `json:"md5"`

	md5 []byte
}

// modelSpec says which model a directory holds; a directory whose stamp has
// the same spec is reused.
type modelSpec struct {
	Version int   `json:"version"`
	Size    int64 `json:"size"`
	Shards  int   `json:"shards"`
	Seed    uint64
}

type modelStamp struct {
	Spec  modelSpec   `json:"spec"`
	Files []modelFile `json:"files"`
}

// The small files of a Hugging Face model repository beside the shards
// (sizes as in a Llama 3 repository, the tokenizer smaller): from 177 bytes
// to 2 MiB, two of them LFS files on the hub (from 1 MiB), one in a
// subdirectory.
var smallFiles = []struct {
	path string
	size int64
}{
	{"README.md", 4_321},
	{"LICENSE", 7_801},
	{"config.json", 654},
	{"generation_config.json", 177},
	{"model.safetensors.index.json", 23_950},
	{"special_tokens_map.json", 301},
	{"tokenizer.json", 2<<20 + 4_242},
	{"tokenizer_config.json", 50_977},
	{"original/params.json", 199},
}

// planModel is the model's file list: shards weight shards of about
// size/shards bytes each (sizes deliberately not multiples of any chunk
// size), and the small files.
func planModel(size int64, shards int) []modelFile {
	var files []modelFile
	base := size / int64(shards)
	left := size
	for i := range shards {
		n := base + int64(13+i*977)
		if i%2 == 1 {
			n = base - int64(7+i*331)
		}
		if i == shards-1 {
			n = left
		}
		left -= n
		files = append(files, modelFile{Path: fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, shards), Size: n})
	}
	for _, s := range smallFiles {
		files = append(files, modelFile{Path: s.path, Size: s.size})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files
}

// writeModel writes the deterministic model into dir (pseudo-random,
// incompressible content from ChaCha8 seeded by the path), or reuses what
// an earlier run wrote there for the same spec, and returns its files with
// their digests.
func writeModel(dir string, spec modelSpec, logf func(string, ...any)) ([]modelFile, error) {
	stampPath := dir + ".json"
	if b, err := os.ReadFile(stampPath); err == nil {
		var st modelStamp
		if json.Unmarshal(b, &st) == nil && st.Spec == spec && filesInPlace(dir, st.Files) {
			for i := range st.Files {
				st.Files[i].md5, _ = hex.DecodeString(st.Files[i].MD5)
			}
			logf("reusing the model in %s", dir)
			return st.Files, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	_ = os.Remove(stampPath)
	files := planModel(spec.Size, spec.Shards)
	logf("writing the model (%d files, %s) into %s", len(files), mib(total(files)), dir)
	for i := range files {
		if err := writeFile(dir, &files[i], spec.Seed); err != nil {
			return nil, err
		}
	}
	b, _ := json.MarshalIndent(modelStamp{Spec: spec, Files: files}, "", "  ")
	if err := os.WriteFile(stampPath, append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return files, nil
}

func filesInPlace(dir string, files []modelFile) bool {
	for _, f := range files {
		st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil || st.Size() != f.Size {
			return false
		}
	}
	return len(files) > 0
}

func writeFile(dir string, f *modelFile, seed uint64) error {
	name := filepath.Join(dir, filepath.FromSlash(f.Path))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	fh, err := os.Create(name)
	if err != nil {
		return err
	}
	var key [32]byte
	h := sha256.Sum256([]byte(fmt.Sprintf("%d/%s", seed, f.Path)))
	copy(key[:], h[:])
	src := rand.NewChaCha8(key)
	s, m := sha256.New(), md5.New()
	w := bufio.NewWriterSize(io.MultiWriter(fh, s, m), 1<<20)
	if _, err := io.CopyN(w, src, f.Size); err != nil {
		fh.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	f.SHA256 = hex.EncodeToString(s.Sum(nil))
	f.md5 = m.Sum(nil)
	f.MD5 = hex.EncodeToString(f.md5)
	return nil
}

func total(files []modelFile) int64 {
	var n int64
	for _, f := range files {
		n += f.Size
	}
	return n
}

// verifyDir checks that dir holds exactly the model's files with their
// SHA-256, plus the files allowed (slash-separated paths, such as the
// loader's manifest); empty directories are ignored. Files are hashed
// `workers` at a time.
func verifyDir(dir string, files []modelFile, allowed map[string]bool, workers int) error {
	want := map[string]modelFile{}
	for _, f := range files {
		want[f.Path] = f
	}
	var problems []string
	var got []modelFile
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if allowed[rel] {
			return nil
		}
		f, ok := want[rel]
		if !ok || !d.Type().IsRegular() {
			problems = append(problems, "unexpected "+rel)
			return nil
		}
		seen[rel] = true
		got = append(got, f)
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range files {
		if !seen[f.Path] {
			problems = append(problems, "missing "+f.Path)
		}
	}
	var mu sync.Mutex
	jobs := make(chan modelFile)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for f := range jobs {
				if msg := checkFile(filepath.Join(dir, filepath.FromSlash(f.Path)), f); msg != "" {
					mu.Lock()
					problems = append(problems, msg)
					mu.Unlock()
				}
			}
		})
	}
	for _, f := range got {
		jobs <- f
	}
	close(jobs)
	wg.Wait()
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 10 {
			problems = append(problems[:10], fmt.Sprintf("and %d more", len(problems)-10))
		}
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func checkFile(name string, f modelFile) string {
	fh, err := os.Open(name)
	if err != nil {
		return err.Error()
	}
	defer fh.Close()
	s := sha256.New()
	n, err := io.Copy(s, fh)
	if err != nil {
		return fmt.Sprintf("%s: %v", f.Path, err)
	}
	if n != f.Size {
		return fmt.Sprintf("%s: %d bytes, want %d", f.Path, n, f.Size)
	}
	if sum := hex.EncodeToString(s.Sum(nil)); sum != f.SHA256 {
		return fmt.Sprintf("%s: sha256 %s, want %s", f.Path, sum, f.SHA256)
	}
	return ""
}
