package archive_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/archive"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// entry is one archive member for the test writers.
type entry struct {
	name string
	kind byte // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar
	mode int64
	data []byte
	link string
}

func file(name string, data []byte) entry {
	return entry{name: name, kind: tar.TypeReg, mode: 0o644, data: data}
}
func dir(name string) entry { return entry{name: name, kind: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) entry {
	return entry{name: name, kind: tar.TypeSymlink, mode: 0o777, link: target}
}
func hardlink(name, target string) entry { return entry{name: name, kind: tar.TypeLink, link: target} }

func tarBytes(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.kind, Mode: e.mode, Linkname: e.link, Size: int64(len(e.data)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zipBytes(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		data := e.data
		switch e.kind {
		case tar.TypeDir:
			h.SetMode(fs.ModeDir | 0o755)
		case tar.TypeSymlink:
			h.SetMode(fs.ModeSymlink | 0o777)
			data = []byte(e.link)
		case tar.TypeChar:
			h.SetMode(fs.ModeDevice | fs.ModeCharDevice | 0o644)
		default:
			h.SetMode(fs.FileMode(e.mode))
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var formats = []struct {
	ext  string
	make func(t *testing.T, entries []entry) []byte
}{
	{".tar", tarBytes},
	{".tar.gz", func(t *testing.T, e []entry) []byte { return gzipBytes(t, tarBytes(t, e)) }},
	{".tgz", func(t *testing.T, e []entry) []byte { return gzipBytes(t, tarBytes(t, e)) }},
	{".zip", zipBytes},
}

// setup writes the archive beside (not in) a fresh destination and
// returns both paths; outside is the destination's parent.
func setup(t *testing.T, ext string, b []byte) (arc, dest, outside string) {
	t.Helper()
	outside = t.TempDir()
	dest = filepath.Join(outside, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	arc = filepath.Join(outside, "model"+ext)
	if err := os.WriteFile(arc, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return arc, dest, outside
}

func TestUnpack(t *testing.T) {
	m := modeltest.Small()
	for _, f := range formats {
		t.Run(f.ext, func(t *testing.T) {
			entries := []entry{dir("./"), dir("onnx/")}
			for _, p := range m.Paths() {
				entries = append(entries, file("./"+p, m[p]))
			}
			entries = append(entries,
				entry{name: "bin/run.sh", kind: tar.TypeReg, mode: 0o4755, data: []byte("#!/bin/sh\n")},
				file("config.json", []byte("replaced")), // a later entry wins
			)
			arc, dest, _ := setup(t, f.ext, f.make(t, entries))
			got, err := archive.Unpack(context.Background(), arc, dest)
			if err != nil {
				t.Fatal(err)
			}
			want := append(m.Paths(), "bin/run.sh")
			sortStrings(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Unpack returned %q, want %q", got, want)
			}
			for _, p := range m.Paths() {
				b, err := os.ReadFile(filepath.Join(dest, p))
				w := m[p]
				if p == "config.json" {
					w = []byte("replaced")
				}
				if err != nil || !bytes.Equal(b, w) {
					t.Errorf("%s: %d bytes, %v; want %d bytes of the model", p, len(b), err, len(w))
				}
			}
			st, err := os.Stat(filepath.Join(dest, "bin/run.sh"))
			if err != nil || st.Mode() != 0o755 {
				t.Errorf("bin/run.sh: mode %v, %v; want 0755 without set-user-id", st.Mode(), err)
			}
			st, _ = os.Stat(filepath.Join(dest, "config.json"))
			if st.Mode() != 0o644 {
				t.Errorf("config.json: mode %v, want 0644", st.Mode())
			}
		})
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestEscapes: every way out of the destination is refused with the same
// message, and nothing lands outside.
func TestEscapes(t *testing.T) {
	ok := file("ok.txt", []byte("ok"))
	cases := []struct {
		name    string
		entries []entry
		msg     string
		tarOnly bool
	}{
		{"dotdot", []entry{ok, file("../x", []byte("pwned"))}, `archive entry "../x" escapes the destination`, false},
		{"absolute", []entry{file("/etc/x", []byte("pwned"))}, `archive entry "/etc/x" escapes the destination`, false},
		{"inner dotdot", []entry{file("a/../../x", []byte("pwned"))}, `archive entry "a/../../x" escapes the destination`, false},
		{"symlink absolute", []entry{symlink("evil", "/etc/passwd")}, `archive entry "evil" escapes the destination`, false},
		{"symlink out", []entry{symlink("sub/evil", "../../x")}, `archive entry "sub/evil" escapes the destination`, false},
		{"symlink through symlink", []entry{symlink("s", "."), symlink("e", "s/../secret")}, `archive entry "e" escapes the destination`, false},
		{"dangling outside", []entry{symlink("s", "."), symlink("e", "s/../x")}, `archive entry "e" is a symbolic link to "s/../x", which is not in the archive`, false},
		{"write through symlink", []entry{symlink("s", "."), symlink("e", "s/.."), file("e/x", []byte("pwned"))}, `archive entry "e/x" escapes the destination`, false},
		{"hardlink out", []entry{hardlink("h", "../x")}, `archive entry "h" escapes the destination`, true},
		{"hardlink absolute", []entry{hardlink("h", "/etc/passwd")}, `archive entry "h" escapes the destination`, true},
	}
	for _, f := range formats {
		for _, c := range cases {
			if c.tarOnly && f.ext == ".zip" {
				continue
			}
			t.Run(f.ext+"/"+c.name, func(t *testing.T) {
				arc, dest, outside := setup(t, f.ext, f.make(t, c.entries))
				if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := archive.Unpack(context.Background(), arc, dest)
				var me *modelload.Error
				if !errors.As(err, &me) || me.Kind != modelload.KindIntegrity || err.Error() != c.msg {
					t.Fatalf("Unpack = %v; want KindIntegrity %q", err, c.msg)
				}
				if _, err := os.Lstat(filepath.Join(outside, "x")); err == nil {
					t.Errorf("a file was written outside the destination")
				}
				for _, l := range []string{"evil", "sub/evil", "e", "s"} {
					if _, err := os.Lstat(filepath.Join(dest, l)); err == nil {
						t.Errorf("the link %s is still there after the failure", l)
					}
				}
			})
		}
	}
}

// TestLinksInside: links that stay inside are unpacked; the listing names
// those that end at regular files.
func TestLinksInside(t *testing.T) {
	w := []byte("weights")
	for _, f := range formats {
		t.Run(f.ext, func(t *testing.T) {
			entries := []entry{
				symlink("early", "blobs/abc"), // before its target
				file("blobs/abc", w),
				symlink("snap/model.bin", "../blobs/abc"),
				symlink("blobdir", "blobs"),
			}
			if f.ext != ".zip" {
				entries = append(entries, hardlink("copy.bin", "blobs/abc"))
			}
			arc, dest, _ := setup(t, f.ext, f.make(t, entries))
			got, err := archive.Unpack(context.Background(), arc, dest)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"blobs/abc", "early", "snap/model.bin"}
			if f.ext != ".zip" {
				want = []string{"blobs/abc", "copy.bin", "early", "snap/model.bin"}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Unpack returned %q, want %q", got, want)
			}
			for _, p := range want {
				if b, err := os.ReadFile(filepath.Join(dest, p)); err != nil || !bytes.Equal(b, w) {
					t.Errorf("%s: %q, %v", p, b, err)
				}
			}
			if target, err := os.Readlink(filepath.Join(dest, "snap/model.bin")); err != nil || target != "../blobs/abc" {
				t.Errorf("snap/model.bin → %q, %v; want a symbolic link to ../blobs/abc", target, err)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	for _, f := range formats {
		for _, c := range []struct {
			name    string
			entries []entry
			msg     string
		}{
			{"dangling", []entry{symlink("a", "nothere")}, `archive entry "a" is a symbolic link to "nothere", which is not in the archive`},
			{"device", []entry{{name: "dev/null", kind: tar.TypeChar, mode: 0o644}}, ""},
			{"reserved", []entry{file(".mlplane-manifest.json", []byte("{}"))}, `archive entry ".mlplane-manifest.json": object name ".mlplane-manifest.json" is reserved`},
			{"dir then file", []entry{dir("a"), file("a/b", nil), file("a", nil)}, `archive entry "a": a directory of that name was unpacked before it`},
		} {
			t.Run(f.ext+"/"+c.name, func(t *testing.T) {
				arc, dest, _ := setup(t, f.ext, f.make(t, c.entries))
				_, err := archive.Unpack(context.Background(), arc, dest)
				msg := c.msg
				if c.name == "device" {
					msg = `archive entry "dev/null" is a character device: only regular files, directories and links are unpacked`
				}
				var me *modelload.Error
				if !errors.As(err, &me) || me.Kind != modelload.KindIntegrity || err.Error() != msg {
					t.Errorf("Unpack = %v; want KindIntegrity %q", err, msg)
				}
			})
		}
	}
	t.Run("hardlink to nothing", func(t *testing.T) {
		arc, dest, _ := setup(t, ".tar", tarBytes(t, []entry{hardlink("h", "later"), file("later", nil)}))
		_, err := archive.Unpack(context.Background(), arc, dest)
		want := `archive entry "h" is a hard link to "later", which is not an earlier file of the archive`
		if err == nil || err.Error() != want {
			t.Errorf("Unpack = %v; want %q", err, want)
		}
	})
}

func TestArchiveInsideDestination(t *testing.T) {
	dest := t.TempDir()
	arc := filepath.Join(dest, "model.tar")
	if err := os.WriteFile(arc, tarBytes(t, []entry{file("a", []byte("a")), file("model.tar", []byte("x"))}), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := archive.Unpack(context.Background(), arc, dest)
	want := `archive entry "model.tar" has the name of the archive itself`
	if err == nil || err.Error() != want {
		t.Errorf("Unpack = %v; want %q", err, want)
	}
}

func TestCorruptAndUnknown(t *testing.T) {
	good := tarBytes(t, []entry{file("a", bytes.Repeat([]byte("x"), 100_000))})
	gz := gzipBytes(t, good)
	gz[len(gz)-6] ^= 0xff // the CRC-32
	for _, c := range []struct {
		ext  string
		b    []byte
		kind modelload.Kind
	}{
		{".tar.gz", []byte("not gzip at all"), modelload.KindIntegrity},
		{".tar.gz", gz, modelload.KindIntegrity},
		{".tar", good[:1000], modelload.KindIntegrity},
		{".zip", []byte("PK not a zip"), modelload.KindIntegrity},
		{".rar", good, modelload.KindUsage},
	} {
		arc, dest, _ := setup(t, c.ext, c.b)
		_, err := archive.Unpack(context.Background(), arc, dest)
		var me *modelload.Error
		if !errors.As(err, &me) || me.Kind != c.kind {
			t.Errorf("%s (%d bytes): %v; want kind %v", c.ext, len(c.b), err, c.kind)
		}
	}
}

func TestCancel(t *testing.T) {
	arc, dest, _ := setup(t, ".tar", tarBytes(t, []entry{file("a", []byte("a"))}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := archive.Unpack(ctx, arc, dest); !errors.Is(err, context.Canceled) {
		t.Errorf("Unpack with a cancelled context = %v; want context.Canceled", err)
	}
}

func TestFormatOf(t *testing.T) {
	for name, want := range map[string]archive.Format{
		"m.tar": archive.Tar, "M.TAR.GZ": archive.TarGzip, "m.tgz": archive.TarGzip, "m.zip": archive.Zip,
		"m.gz": archive.Unknown, "m.tar.bz2": archive.Unknown, "zip": archive.Unknown,
	} {
		if got := archive.FormatOf(name); got != want {
			t.Errorf("FormatOf(%q) = %v, want %v", name, got, want)
		}
	}
}
