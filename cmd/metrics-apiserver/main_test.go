package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestHelpListsFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"--help"}, &out); !errors.Is(err, pflag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, f := range []string{"--interval", "--scrape-timeout", "--cert-mode", "--cert-dir", "--secure-port", "-v, --v"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help lacks %s", f)
		}
	}
}

// Bad flags are refused before anything starts, every problem at once.
func TestRefusesBadFlags(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"--cert-mode=self-signed", "--interval=1s", "--scrape-timeout=2s"}, &out)
	want := "--scrape-timeout 2s: want a positive duration less than --interval 1s\n" +
		"--cert-mode self-signed needs --cert-dir, where it writes tls.crt and tls.key, and no --tls-cert-file or --tls-private-key-file"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}
	if err := run([]string{"--cert-dir=/tls", "extra"}, &out); err == nil || err.Error() != `unexpected arguments ["extra"]` {
		t.Errorf("positional argument: %v", err)
	}
}
