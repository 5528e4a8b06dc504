// Command demo runs mlplane on a local cluster (make demo): it builds
// mlplane's binaries, starts the control plane from bin/ (make tools) with
// fake GPU nodes, deploys mlplane and the examples/, waits for them, prints
// where each pod landed, per GPU, and leaves everything running in the
// background. Where the host can run a real kubelet node (root, make
// tools), it adds one and serves a model there end to end: S3 (a detached
// helper on the node's bridge), the injected model-loader, the example
// model server, whose answer and load time it prints with a curl line.
// `demo down` (make demo-down) stops it and restores the host.
//
// With --autoscale (make demo-autoscale) it then shows a
// HorizontalPodAutoscaler scaling an inference Deployment up and down on
// GPU utilisation through the custom metrics API (autoscale.go).
//
//	demo up [--nodes 3x8x80Gi,2x4x48Gi] [--dir .cache/demo] [--timeout 5m] [--node-agents=false] [--real-node auto|on|off] [--autoscale]
//	demo down [--dir .cache/demo]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mlplane/mlplane/internal/cluster"
)

// DefaultNodes: three 8-GPU 80Gi nodes and two 4-GPU 48Gi nodes.
const DefaultNodes = "3x8x80Gi,2x4x48Gi"

// leasesCommand is the hidden subcommand of the detached helper that renews
// the nodes' Leases when no node-agent binary exists.
const leasesCommand = "renew-leases"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case leasesCommand:
		err = renewLeases(os.Args[2:])
	case registryCommand:
		err = serveRegistry(os.Args[2:])
	case s3Command:
		err = serveS3(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: demo up [--nodes SPEC] [--dir DIR] [--timeout D] | demo down [--dir DIR]")
	os.Exit(2)
}

func defaultDir() string {
	root, err := cluster.ModuleRoot()
	if err != nil {
		return filepath.Join(".cache", "demo")
	}
	return filepath.Join(root, ".cache", "demo")
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", defaultDir(), "the demo's state directory")
	_ = fs.Parse(args)
	stopped, err := cluster.Down(*dir)
	if err != nil {
		return err
	}
	if len(stopped) == 0 {
		fmt.Println("demo: nothing running")
	} else {
		fmt.Printf("demo: stopped %s\n", strings.Join(stopped, ", "))
	}
	return os.RemoveAll(*dir)
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	nodes := fs.String("nodes", DefaultNodes, "fake GPU nodes: NODESxGPUSxSIZE[,...]")
	dir := fs.String("dir", defaultDir(), "the demo's state directory (logs, kubeconfig)")
	examples := fs.String("examples", "", "the manifests to apply (default: examples/ of the module)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the examples")
	agents := fs.Bool("node-agents", true, "run bin/node-agent per node; false: a helper process publishes the fake GPUs' Leases instead")
	realNode := fs.String("real-node", "auto", "add a real kubelet node serving one model: auto (when this host can: root, make tools), on, off")
	withAutoscale := fs.Bool("autoscale", false, "then show an HPA scaling a Deployment on GPU utilisation through the custom metrics API")
	_ = fs.Parse(args)

	start := time.Now()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	root, err := cluster.ModuleRoot()
	if err != nil {
		return err
	}
	if *examples == "" {
		*examples = filepath.Join(root, "examples")
	}
	if _, err := cluster.ParseNodeSpec(*nodes); err != nil {
		return err
	}
	if stopped, err := cluster.Down(*dir); err != nil {
		return err
	} else if len(stopped) > 0 {
		fmt.Printf("demo: stopped the previous demo (%s)\n", strings.Join(stopped, ", "))
	}
	if err := os.RemoveAll(*dir); err != nil {
		return err
	}

	built := buildBinaries(ctx, root)
	logf := func(f string, a ...any) {
		fmt.Printf("%s "+f+"\n", append([]any{time.Since(start).Round(100 * time.Millisecond)}, a...)...)
	}
	copts := cluster.Options{Dir: *dir, Detach: true, Logf: logf}
	withReal, err := wantRealNode(*realNode)
	if err != nil {
		return err
	}
	if withReal {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		copts.RealNode = &cluster.RealNodeOptions{RegistryCommand: []string{self, registryCommand}}
	}
	c := cluster.New(copts)
	ok := false
	var extra []cluster.StateProcess
	defer func() {
		if !ok {
			c.DumpLogs(os.Stderr, 30)
			for _, h := range extra {
				_ = syscall.Kill(-h.PID, syscall.SIGTERM)
			}
			_ = c.Stop()
		}
	}()
	if err := c.Start(ctx); err != nil {
		return err
	}
	publisher := cluster.PublishInProcess
	if built["node-agent"] && *agents {
		publisher = cluster.PublishNodeAgent
	}
	names, err := c.AddGPUNodes(ctx, *nodes, cluster.NodeOptions{Publisher: publisher})
	if err != nil {
		return err
	}
	if publisher == cluster.PublishInProcess {
		// This process exits; a detached copy of it keeps the Leases fresh.
		helper, err := startLeaseHelper(c, names)
		if err != nil {
			return err
		}
		extra = append(extra, helper)
	}
	if built["webhook"] {
		if err := c.StartWebhook(ctx, cluster.WebhookOptions{}); err != nil {
			return err
		}
	}
	if built["extender"] {
		err = c.StartExtender(ctx, cluster.ExtenderOptions{})
	} else {
		logf("demo: no extender yet: the %s profile runs without it", cluster.MlplaneScheduler)
		err = c.StartMlplaneScheduler(ctx, "", "")
	}
	if err != nil {
		return err
	}
	if built["metrics-apiserver"] {
		if err := c.StartMetricsAPIServer(ctx, cluster.MetricsAPIServerOptions{}); err != nil {
			return err
		}
	}
	if err := c.SaveState(extra...); err != nil {
		return err
	}

	cs := c.Client()
	if err := applyExamples(ctx, c, cs, *examples, built["webhook"], logf); err != nil {
		return err
	}
	var model *served
	nodeNames := c.NodeNames()
	if withReal {
		var helpers []cluster.StateProcess
		model, helpers, err = serveOnRealNode(ctx, c, root, logf)
		extra = append(extra, helpers...)
		if err != nil {
			return err
		}
		if err := c.SaveState(extra...); err != nil {
			return err
		}
		nodeNames = append(nodeNames, c.RealNodeName())
	}
	waitErr := waitDeployments(ctx, cs, *timeout, logf)
	if err := printPlacement(ctx, os.Stdout, cs, nodeNames); err != nil {
		return err
	}
	if model != nil {
		printServed(os.Stdout, model)
	}
	if *withAutoscale && waitErr == nil {
		if err := autoscale(ctx, os.Stdout, c, logf); err != nil {
			return err
		}
		if err := c.SaveState(extra...); err != nil {
			return err
		}
	}
	ok = true
	fmt.Printf("\nmlplane demo running (%s), ready in %s. Components: %s\n", c.Dir(), time.Since(start).Round(time.Second), strings.Join(c.Components(), ", "))
	fmt.Printf("Logs: %s/logs/. Stop it with: make demo-down\n\n", c.Dir())
	fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig())
	fmt.Printf("kubectl get pods -n %s -o wide   # with bin/ on PATH for a matching kubectl\n", demoNamespace)
	return waitErr
}

// wantRealNode reads --real-node; on auto it says why a host gets none.
func wantRealNode(mode string) (bool, error) {
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		return false, err
	}
	why := cluster.RealNodeSupported(bin)
	switch mode {
	case "auto":
		if why != nil {
			fmt.Printf("demo: no real node (--real-node=auto): %v\n", why)
		}
		return why == nil, nil
	case "on":
		if why != nil {
			return false, fmt.Errorf("--real-node=on: %w", why)
		}
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("--real-node=%q: want auto, on or off", mode)
}

// buildBinaries builds each of mlplane's binaries into the bin directory
// ($MLPLANE_BIN, else bin/) on its own, so a binary that does not compile
// yet only leaves its component out.
func buildBinaries(ctx context.Context, root string) map[string]bool {
	built := map[string]bool{}
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		bin = filepath.Join(root, "bin")
	}
	for _, name := range []string{"webhook", "extender", "node-agent", "metrics-apiserver"} {
		if _, err := os.Stat(filepath.Join(root, "cmd", name)); err != nil {
			fmt.Printf("demo: no cmd/%s yet: running without it\n", name)
			continue
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("demo: cmd/%s does not build, running without it:\n%s\n", name, out)
			continue
		}
		built[name] = true
	}
	return built
}

func startLeaseHelper(c *cluster.Cluster, nodes []string) (cluster.StateProcess, error) {
	return startHelper(c, "lease-publisher", leasesCommand, "--kubeconfig", c.Kubeconfig(), "--nodes", strings.Join(nodes, ","))
}

func renewLeases(args []string) error {
	fs := flag.NewFlagSet(leasesCommand, flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "")
	nodes := fs.String("nodes", "", "comma-separated node names")
	_ = fs.Parse(args)
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	err = cluster.RenewLeases(ctx, cs, strings.Split(*nodes, ","))
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
