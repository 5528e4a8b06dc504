package e2e

import (
	"fmt"
	"os"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
)

var testenv env.Environment

// TestMain starts the local cluster, or uses the cluster of --kubeconfig /
// E2E_KUBECONFIG (see docs/local-cluster.md).
func TestMain(m *testing.M) {
	cfg, err := envconf.NewFromFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if cfg.KubeconfigFile() == "" {
		cfg.WithKubeconfigFile(os.Getenv(EnvKubeconfig))
	}
	testenv = env.NewWithConfig(cfg)
	if cfg.KubeconfigFile() == "" {
		spec := os.Getenv(EnvNodes)
		if spec == "" {
			spec = DefaultNodes
		}
		testenv.Setup(SetupLocalCluster(spec))
		testenv.Finish(StopLocalCluster())
	} else {
		fmt.Fprintf(os.Stderr, "running against the existing cluster of %s\n", cfg.KubeconfigFile())
	}
	testenv.AfterEachTest(DumpLogsOnFailure)
	code := testenv.Run(m)
	if TeardownError() != nil && code == 0 {
		code = 1 // the host was left changed: that fails the run
	}
	os.Exit(code)
}
