// Package archive unpacks a model delivered as one archive (an https://
// source whose file is a .tar, .tar.gz, .tgz or .zip) into the model's
// directory: the engine's modelload.Options.Unpack.
//
// Every entry's name must be a modelload.CleanPath: an absolute name or one
// with a ".." element is refused with the KindIntegrity error "archive
// entry %q escapes the destination", as is a link whose target would leave
// the destination, and an entry named like a file the loader reserves
// (its manifest, its partial directory). A leading "./" is dropped
// ("./config.json" is "config.json"); the entry "./" itself is skipped.
//
// What is unpacked:
//
//   - directories, mode 0755, and regular files, mode 0644, or 0755 when
//     the archive gives the file any execute bit; ownership, set-user-id,
//     set-group-id and sticky bits are never applied;
//   - hard links (tar) to an earlier regular file of the same archive,
//     as hard links;
//   - symbolic links with a relative target that stays inside the
//     destination once every link on the way is followed (checked after the
//     last entry, on the unpacked tree, so that links through links are
//     caught), and that names an entry of the archive: an absolute target,
//     one that escapes, or one that dangles is refused (and removed).
//
// Any other entry type (device, FIFO, ...) is a KindIntegrity error; tar's
// pax global headers are skipped. A later entry of the same name replaces
// an earlier one, as tar does. All writes go through an os.Root on the
// destination, so that no entry can write outside it even through a link.
// Entries are streamed: memory stays bounded (one 1 MiB buffer) whatever
// the archive's size. A corrupt archive (bad gzip stream, zip checksum) is
// KindIntegrity; a failed write is KindDisk (modelload.Classify).
package archive

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Format is an archive format.
type Format int

// The formats Unpack reads.
const (
	Unknown Format = iota
	Tar
	TarGzip
	Zip
)

// FormatOf tells an archive's format from its name (case-insensitive):
// .tar, .tar.gz or .tgz, .zip; Unknown otherwise.
func FormatOf(name string) Format {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"):
		return TarGzip
	case strings.HasSuffix(n, ".tar"):
		return Tar
	case strings.HasSuffix(n, ".zip"):
		return Zip
	}
	return Unknown
}

// Unpack unpacks the archive at archivePath (its format told by its name,
// see FormatOf) into destDir, which must exist, and returns the
// slash-separated paths, relative to destDir, of the regular files written
// (hard links and symbolic links to regular files included), sorted. See
// the package documentation for what is refused. Errors are
// *modelload.Error.
func Unpack(ctx context.Context, archivePath, destDir string) ([]string, error) {
	format := FormatOf(archivePath)
	if format == Unknown {
		return nil, modelload.Errorf(modelload.KindUsage, "archive %s: unknown format: want a .tar, .tar.gz, .tgz or .zip file", filepath.Base(archivePath))
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return nil, modelload.Classify(fmt.Errorf("archive destination: %w", err))
	}
	defer root.Close()
	u := &unpacker{ctx: ctx, root: root, dest: destDir, name: filepath.Base(archivePath), files: map[string]bool{}, buf: make([]byte, 1<<20)}
	if st, err := os.Stat(archivePath); err == nil {
		u.self = st
	}
	switch format {
	case Zip:
		err = u.unzip(archivePath)
	default:
		err = u.untar(archivePath, format == TarGzip)
	}
	if err == nil {
		err = u.checkLinks()
	}
	if err != nil {
		// Leave no link behind that was not checked: one could lead out.
		for _, l := range u.links {
			if st, lerr := root.Lstat(filepath.FromSlash(l.name)); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
				root.Remove(filepath.FromSlash(l.name))
			}
		}
		return nil, err
	}
	out := make([]string, 0, len(u.files))
	for p, regular := range u.files {
		if regular {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

type unpacker struct {
	ctx   context.Context
	root  *os.Root
	dest  string
	name  string      // the archive's base name, for messages
	self  os.FileInfo // the archive itself, nil if unknown
	files map[string]bool
	links []symlink
	buf   []byte
}

type symlink struct{ name, target string }

func (u *unpacker) corrupt(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return modelload.Classify(err)
	}
	var me *modelload.Error
	if errors.As(err, &me) {
		return me
	}
	return modelload.Errorf(modelload.KindIntegrity, "archive %s: %w", u.name, err)
}

func (u *unpacker) untar(archivePath string, gz bool) error {
	f, err := os.Open(archivePath)
	if err != nil {
		return modelload.Classify(fmt.Errorf("archive %s: %w", u.name, err))
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return u.corrupt(fmt.Errorf("not a gzip stream: %w", err))
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		if err := u.ctx.Err(); err != nil {
			return modelload.Classify(err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			if gz {
				// The gzip checksum is checked at the stream's end, past
				// the tar end marker: read up to it.
				if _, err := io.CopyBuffer(io.Discard, r, u.buf); err != nil {
					return u.corrupt(err)
				}
			}
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return u.corrupt(err)
		}
		switch hdr.Typeflag {
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeDir:
			err = u.dir(hdr.Name)
		case tar.TypeReg: // the Reader makes old tars' TypeRegA TypeReg
			err = u.file(hdr.Name, hdr.Mode, tr)
		case tar.TypeLink:
			err = u.hardlink(hdr.Name, hdr.Linkname)
		case tar.TypeSymlink:
			err = u.symlink(hdr.Name, hdr.Linkname)
		default:
			err = u.unsupported(hdr.Name, tarType(hdr.Typeflag))
		}
		if err != nil {
			return u.corrupt(err)
		}
	}
}

func tarType(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	}
	return fmt.Sprintf("tar entry of type %q", t)
}

func (u *unpacker) unzip(archivePath string) error {
	zr, err := zip.OpenReader(archivePath)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		if errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrAlgorithm) || errors.Is(err, zip.ErrChecksum) {
			return u.corrupt(err)
		}
		return modelload.Classify(fmt.Errorf("archive %s: %w", u.name, err))
	}
	defer zr.Close()
	for _, zf := range zr.File {
		if err := u.ctx.Err(); err != nil {
			return modelload.Classify(err)
		}
		mode := zf.Mode()
		switch {
		case mode.IsDir() || strings.HasSuffix(zf.Name, "/"):
			err = u.dir(zf.Name)
		case mode&fs.ModeSymlink != 0:
			err = u.zipSymlink(zf)
		case mode.IsRegular():
			err = u.zipFile(zf)
		default:
			err = u.unsupported(zf.Name, zipType(mode))
		}
		if err != nil {
			return u.corrupt(err)
		}
	}
	return nil
}

func zipType(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

func (u *unpacker) zipFile(zf *zip.File) error {
	rc, err := zf.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return u.file(zf.Name, int64(zf.Mode().Perm()), rc)
}

func (u *unpacker) zipSymlink(zf *zip.File) error {
	rc, err := zf.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4097))
	if err != nil {
		return err
	}
	if len(b) > 4096 {
		return modelload.Errorf(modelload.KindIntegrity, "archive entry %q: a symbolic link target longer than 4096 bytes", zf.Name)
	}
	return u.symlink(zf.Name, string(b))
}

// clean makes an entry name a destination path ("" for the root itself).
func (u *unpacker) clean(name string) (string, error) {
	n := name
	for strings.HasPrefix(n, "./") {
		n = strings.TrimLeft(n[2:], "/")
	}
	if n == "" || n == "." {
		return "", nil
	}
	p, err := modelload.CleanPath(n)
	if err != nil {
		if strings.HasPrefix(n, "/") || strings.Contains(err.Error(), `".."`) {
			return "", escapes(name)
		}
		return "", modelload.Errorf(modelload.KindIntegrity, "archive entry %q: %v", name, err)
	}
	if u.self != nil {
		if st, err := u.root.Lstat(filepath.FromSlash(p)); err == nil && os.SameFile(st, u.self) {
			return "", modelload.Errorf(modelload.KindIntegrity, "archive entry %q has the name of the archive itself", name)
		}
	}
	return p, nil
}

func escapes(name string) error {
	return modelload.Errorf(modelload.KindIntegrity, "archive entry %q escapes the destination", name)
}

func (u *unpacker) unsupported(name, what string) error {
	return modelload.Errorf(modelload.KindIntegrity, "archive entry %q is a %s: only regular files, directories and links are unpacked", name, what)
}

func (u *unpacker) dir(name string) error {
	p, err := u.clean(name)
	if err != nil || p == "" {
		return err
	}
	if err := u.root.MkdirAll(filepath.FromSlash(p), 0o755); err != nil {
		return u.diskErr(name, err)
	}
	return nil
}

func (u *unpacker) diskErr(name string, err error) error {
	// A write refused by the Root (a path through a link that leaves the
	// destination) is an escape, not a disk failure.
	if strings.Contains(err.Error(), "path escapes from parent") {
		return escapes(name)
	}
	return modelload.Classify(fmt.Errorf("archive entry %q: %w", name, err))
}

// prepare makes p's parent directory and removes an earlier entry named p
// (not a directory).
func (u *unpacker) prepare(name, p string) error {
	fp := filepath.FromSlash(p)
	if dir := path.Dir(p); dir != "." {
		if err := u.root.MkdirAll(filepath.FromSlash(dir), 0o755); err != nil {
			return u.diskErr(name, err)
		}
	}
	st, err := u.root.Lstat(fp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return u.diskErr(name, err)
	case st.IsDir():
		return modelload.Errorf(modelload.KindIntegrity, "archive entry %q: a directory of that name was unpacked before it", name)
	}
	if err := u.root.Remove(fp); err != nil {
		return u.diskErr(name, err)
	}
	delete(u.files, p)
	return nil
}

func (u *unpacker) file(name string, mode int64, r io.Reader) error {
	p, err := u.clean(name)
	if err != nil {
		return err
	}
	if p == "" {
		return modelload.Errorf(modelload.KindIntegrity, "archive entry %q: a file without a name", name)
	}
	if err := u.prepare(name, p); err != nil {
		return err
	}
	perm := os.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	f, err := u.root.OpenFile(filepath.FromSlash(p), os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return u.diskErr(name, err)
	}
	_, err = io.CopyBuffer(struct{ io.Writer }{f}, ctxReader{u.ctx, r}, u.buf)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) || errors.Is(err, context.Canceled) {
			return u.diskErr(name, err)
		}
		// A read failure: the archive is corrupt.
		return modelload.Errorf(modelload.KindIntegrity, "archive %s: entry %q: %w", u.name, name, err)
	}
	u.files[p] = true
	return nil
}

func (u *unpacker) hardlink(name, target string) error {
	p, err := u.clean(name)
	if err != nil {
		return err
	}
	t, err := u.clean(target)
	if err != nil || t == "" {
		return escapes(name)
	}
	if !u.files[t] {
		return modelload.Errorf(modelload.KindIntegrity, "archive entry %q is a hard link to %q, which is not an earlier file of the archive", name, target)
	}
	if p == "" || p == t {
		return modelload.Errorf(modelload.KindIntegrity, "archive entry %q: a hard link to itself", name)
	}
	if err := u.prepare(name, p); err != nil {
		return err
	}
	if err := u.root.Link(filepath.FromSlash(t), filepath.FromSlash(p)); err != nil {
		return u.diskErr(name, err)
	}
	u.files[p] = true
	return nil
}

func (u *unpacker) symlink(name, target string) error {
	p, err := u.clean(name)
	if err != nil {
		return err
	}
	if p == "" {
		return modelload.Errorf(modelload.KindIntegrity, "archive entry %q: a symbolic link without a name", name)
	}
	// Lexically first: absolute targets and ".." past the root are refused
	// at once; checkLinks resolves the survivors on disk at the end.
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsAny(target, "\\\x00") {
		return escapes(name)
	}
	if j := path.Join(path.Dir(p), target); j == ".." || strings.HasPrefix(j, "../") {
		return escapes(name)
	}
	if err := u.prepare(name, p); err != nil {
		return err
	}
	if err := u.root.Symlink(target, filepath.FromSlash(p)); err != nil {
		return u.diskErr(name, err)
	}
	u.files[p] = false
	u.links = append(u.links, symlink{name: p, target: target})
	return nil
}

// checkLinks resolves every symbolic link on the unpacked tree: one that
// leaves the destination, dangles, or ends at the archive itself is
// removed and refused. A link to a regular file is listed as a file.
func (u *unpacker) checkLinks() error {
	if len(u.links) == 0 {
		return nil
	}
	realDest, err := filepath.EvalSymlinks(u.dest)
	if err != nil {
		return modelload.Classify(fmt.Errorf("archive destination: %w", err))
	}
	for _, l := range u.links {
		if _, ok := u.files[l.name]; !ok {
			continue // replaced by a later entry
		}
		abs := filepath.Join(u.dest, filepath.FromSlash(l.name))
		real, err := filepath.EvalSymlinks(abs)
		var bad error
		switch {
		case err != nil && errors.Is(err, fs.ErrNotExist):
			bad = modelload.Errorf(modelload.KindIntegrity, "archive entry %q is a symbolic link to %q, which is not in the archive", l.name, l.target)
		case err != nil:
			// A loop, or a path through a non-directory.
			bad = modelload.Errorf(modelload.KindIntegrity, "archive entry %q: symbolic link to %q: %v", l.name, l.target, errors.Unwrap(err))
		case real != realDest && !strings.HasPrefix(real, realDest+string(filepath.Separator)):
			bad = escapes(l.name)
		}
		var st os.FileInfo
		if bad == nil {
			st, err = os.Stat(real)
			if err != nil {
				return modelload.Classify(err)
			}
			if u.self != nil && os.SameFile(st, u.self) {
				bad = modelload.Errorf(modelload.KindIntegrity, "archive entry %q is a symbolic link to the archive itself", l.name)
			}
		}
		if bad != nil {
			u.root.Remove(filepath.FromSlash(l.name))
			return bad
		}
		u.files[l.name] = st.Mode().IsRegular()
	}
	return nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
