package kube

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRESTConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(good, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := RESTConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || cfg.BearerToken != "t" {
		t.Errorf("config from %s: host %q, token %q", good, cfg.Host, cfg.BearerToken)
	}
}

func TestRESTConfigErrors(t *testing.T) {
	// Outside a pod: the in-cluster variables are unset.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{"", "no --kubeconfig and not in a cluster: unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"},
		{missing, "kubeconfig " + missing + ": stat " + missing + ": no such file or directory"},
		{empty, "kubeconfig " + empty + ": invalid configuration: no configuration has been provided, try setting KUBERNETES_MASTER environment variable"},
	} {
		cfg, err := RESTConfig(tc.path)
		if err == nil || err.Error() != tc.want {
			t.Errorf("RESTConfig(%q) = %v, %v; want the error %q", tc.path, cfg, err, tc.want)
		}
	}
}
