package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/mutate"
)

// TestModelServed serves one model end to end on the real node: S3 (a
// gofakes3 in this process) → the webhook's loader init container → the
// example model server, on a GPU the extender assigned.
func TestModelServed(t *testing.T) {
	f := features.New("one model served end to end").
		WithLabel("component", "model-loader").
		Assess("a Deployment with a model URI and GPU memory serves the model's exact files on the real node", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireRealNode(ctx, t)
			RequireComponent(ctx, t, "webhook")
			cs := Clientset(t, cfg)
			node := c.RealNodeName()

			// The images, for linux/amd64, into the node's registry.
			buildStart := time.Now()
			loaderRepoTag := strings.TrimPrefix(mutate.DefaultLoaderImage, "ghcr.io/")
			loaderImg := BuildImage(ctx, t, "model-loader")
			if _, err := c.PushImage(ctx, loaderRepoTag, loaderImg); err != nil {
				t.Fatal(err)
			}
			serverRef, err := c.PushImage(ctx, ModelServerRepoTag, BuildImage(ctx, t, "examples/model-server"))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("images built and pushed in %s", time.Since(buildStart).Round(time.Millisecond))

			// GPUs for the real node, published the way the KWOK nodes' are.
			if err := c.StartNodeAgent(ctx, node, "2x16Gi"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unpublishGPUs(t, c, node) })
			if err := cluster.WaitNodesReady(ctx, cs, []string{node}, true, LongWait); err != nil {
				t.Fatal(err)
			}

			AssessModelServed(ctx, t, cfg, c, serverRef)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
