// Package install is the install test: mlplane installed from config/ as
// an admin would (kustomize, kubectl apply --server-side), its webhook,
// extender, mlplane-scheduler and node agent running as pods on the local
// cluster's real node, and a model served through them. It starts its own
// local cluster, with the real node and no mlplane process; on a host that
// cannot run a real node (E2E_REAL_NODE, see test/e2e) every test reports
// SKIPPED, NOT PASSED.
package install

import (
	"fmt"
	"os"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"

	"github.com/mlplane/mlplane/test/e2e"
)

var testenv env.Environment

func TestMain(m *testing.M) {
	cfg, err := envconf.NewFromFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	testenv = env.NewWithConfig(cfg)
	testenv.Setup(e2e.SetupRealNodeCluster(), installMlplane)
	testenv.Finish(e2e.StopLocalCluster())
	testenv.AfterEachTest(e2e.DumpLogsOnFailure)
	code := testenv.Run(m)
	if e2e.TeardownError() != nil && code == 0 {
		code = 1 // the host was left changed: that fails the run
	}
	os.Exit(code)
}
