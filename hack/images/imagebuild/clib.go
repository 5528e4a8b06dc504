package imagebuild

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// cross are the C cross compilers tried for a GOARCH other than the build
// machine's (Debian's gcc-<triple> packages).
var cross = map[string]string{
	"amd64": "x86_64-linux-gnu-gcc",
	"arm64": "aarch64-linux-gnu-gcc",
}

// cRuntime is the C runtime a cgo binary needs in its image, as layer
// entries, taken from the C compiler's own libraries (the build host's
// glibc for a native build): the program interpreter (PT_INTERP), every
// DT_NEEDED library, transitively, of the binary and of dlopen, laid out
// as Debian lays them out (/usr/lib/<triple>, /lib -> usr/lib), and an
// ld.so.conf that names that directory (the NVIDIA container toolkit runs
// ldconfig in the container after mounting the driver's libraries).
func cRuntime(ctx context.Context, cc, bin string, dlopen []string) ([]entry, []string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	interp, err := interpreter(f)
	if err != nil {
		return nil, nil, err
	}
	if interp == "" {
		return nil, nil, fmt.Errorf("%s: no program interpreter: not a dynamically linked binary", bin)
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, nil, err
	}
	triple, err := ccOutput(ctx, cc, "-dumpmachine")
	if err != nil {
		return nil, nil, err
	}
	libDir := "/usr/lib/" + triple

	queue := append(append(append([]string(nil), needed...), dlopen...), path.Base(interp))
	seen := map[string]bool{}
	var entries []entry
	var names []string
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if seen[n] {
			continue
		}
		seen[n] = true
		p, err := ccOutput(ctx, cc, "-print-file-name="+n)
		if err != nil {
			return nil, nil, err
		}
		if !filepath.IsAbs(p) {
			return nil, nil, fmt.Errorf("%s: %s -print-file-name does not find it (is the C library for %s installed?)", n, cc, triple)
		}
		data, err := os.ReadFile(p) // follows symlinks: the soname file holds the library
		if err != nil {
			return nil, nil, err
		}
		lib, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		deps, err := lib.ImportedLibraries()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		queue = append(queue, deps...)
		entries = append(entries, file(libDir+"/"+n, 0o755, data))
		names = append(names, n)
	}

	// The interpreter where the binary asks for it, through Debian's
	// merged-/usr links.
	usrInterp := "/usr" + interp
	if !strings.HasPrefix(interp, "/lib/") && !strings.HasPrefix(interp, "/lib64/") {
		return nil, nil, fmt.Errorf("%s: program interpreter %s not under /lib or /lib64", bin, interp)
	}
	entries = append(entries, symlink("/lib", "usr/lib"))
	if strings.HasPrefix(interp, "/lib64/") {
		entries = append(entries, symlink("/lib64", "usr/lib64"))
	}
	if usrInterp != libDir+"/"+path.Base(interp) {
		rel, err := filepath.Rel(path.Dir(usrInterp), libDir+"/"+path.Base(interp))
		if err != nil {
			return nil, nil, err
		}
		entries = append(entries, symlink(usrInterp, rel))
	}
	entries = append(entries,
		file("/etc/ld.so.conf", 0o644, []byte("include /etc/ld.so.conf.d/*.conf\n")),
		file("/etc/ld.so.conf.d/"+triple+".conf", 0o644, []byte(fmt.Sprintf("/usr/local/lib/%[1]s\n/lib/%[1]s\n/usr/lib/%[1]s\n", triple))))
	return entries, names, nil
}

// interpreter is the PT_INTERP path of an ELF file, "" for a static one.
func interpreter(f *elf.File) (string, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\x00"), nil
	}
	return "", nil
}

// ccOutput runs the C compiler for one line of information.
func ccOutput(ctx context.Context, cc string, arg string) (string, error) {
	out, err := exec.CommandContext(ctx, cc, arg).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", cc, arg, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// cCompiler is the C compiler for linux/arch: CC (or `go env CC`) for the
// build machine's own architecture, else the Debian cross compiler; ""
// when there is none.
func cCompiler(ctx context.Context, goCmd, arch, hostArch string) string {
	var cc string
	if arch == hostArch {
		cc = os.Getenv("CC")
		if cc == "" {
			if out, err := exec.CommandContext(ctx, goCmd, "env", "CC").Output(); err == nil {
				cc = strings.TrimSpace(string(out))
			}
		}
		if cc == "" {
			cc = "gcc"
		}
	} else {
		cc = cross[arch]
	}
	if cc == "" {
		return ""
	}
	if p, err := exec.LookPath(cc); err == nil {
		return p
	}
	return ""
}
