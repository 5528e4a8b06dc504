package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// BinDir is where the binaries come from.
func (c *Cluster) BinDir() string { return c.opts.BinDir }

// Bin is the path of a binary in BinDir.
func (c *Cluster) Bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

// HasBin reports whether BinDir holds an executable name: the e2e suite and
// the demo use it to run what exists of mlplane so far.
func (c *Cluster) HasBin(name string) bool {
	st, err := os.Stat(c.Bin(name))
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// DefaultBinDir is $MLPLANE_BIN, else bin/ at the root of the mlplane module
// containing the working directory.
func DefaultBinDir() (string, error) {
	if b := os.Getenv("MLPLANE_BIN"); b != "" {
		return filepath.Abs(b)
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// ModuleRoot finds the root of the github.com/mlplane/mlplane module from
// the working directory upwards.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/mlplane/mlplane\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the github.com/mlplane/mlplane module; set MLPLANE_BIN or Options.BinDir")
		}
		dir = parent
	}
}
