// Package e2e is mlplane's end-to-end suite (sigs.k8s.io/e2e-framework). By
// default it starts a local cluster (internal/cluster): etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and KWOK built by
// make tools, fake GPU nodes, and mlplane's binaries from bin/ as local
// processes. Given a kubeconfig (--kubeconfig or E2E_KUBECONFIG) it runs
// against that cluster instead, where mlplane must already be installed;
// features that need to stop or reconfigure a component then skip.
//
// This file is the helper API for feature files: Local, RequireLocal,
// Kubectl, CreateNamespace, Clientset, WaitPods.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"

	"github.com/mlplane/mlplane/internal/cluster"
)

// Environment variables the suite reads.
const (
	// EnvKubeconfig runs the suite against an existing cluster (like
	// e2e-framework's --kubeconfig flag).
	EnvKubeconfig = "E2E_KUBECONFIG"
	// EnvNodes is the local cluster's GPU node spec (default DefaultNodes).
	EnvNodes = "E2E_NODES"
	// EnvPublisher forces who publishes the fake nodes' GPUs: "agent" (one
	// bin/node-agent per node) or "inprocess". Default: agents when
	// bin/node-agent exists.
	EnvPublisher = "E2E_NODE_PUBLISHER"
	// EnvKeep leaves the local cluster's directory in place after the run
	// (it is printed at start), for reading the logs.
	EnvKeep = "MLPLANE_KEEP_CLUSTER_DIR"
	// EnvRealNode adds a real kubelet node to the local cluster: "auto"
	// (the default: when the host can run one, see
	// cluster.RealNodeSupported), "on" (fail when it cannot) or "off".
	EnvRealNode = "E2E_REAL_NODE"
)

// DefaultNodes is the local cluster's GPU nodes: three nodes, two sizes.
const DefaultNodes = "2x8x80Gi,1x4x40Gi"

// Timeouts for wait.For: generous, because these 2 cores are shared.
const (
	ShortWait = 30 * time.Second
	LongWait  = 3 * time.Minute
)

type clusterKey struct{}

// Local returns the local cluster the suite started, or nil when the suite
// runs against an existing cluster.
func Local(ctx context.Context) *cluster.Cluster {
	c, _ := ctx.Value(clusterKey{}).(*cluster.Cluster)
	return c
}

// RequireLocal returns the local cluster, or skips the test when the suite
// runs against an existing cluster: for steps that stop, restart or
// reconfigure components.
func RequireLocal(ctx context.Context, t *testing.T) *cluster.Cluster {
	t.Helper()
	c := Local(ctx)
	if c == nil {
		t.Skip("needs the local cluster (it stops or reconfigures mlplane's components); running against " + EnvKubeconfig)
	}
	return c
}

// RequireComponent skips the test when the local cluster does not run the
// named component (its binary is not built yet). Against an existing
// cluster it does nothing: mlplane is assumed installed.
func RequireComponent(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	if c := Local(ctx); c != nil && !c.Running(name) {
		t.Skipf("the local cluster does not run %s (is bin/%s built?)", name, name)
	}
}

// SetupLocalCluster is the env.Func that starts the local cluster with the
// GPU nodes of spec and every mlplane component whose binary exists in
// bin/: the webhook, the extender (with the mlplane-scheduler; without the
// extender the mlplane-scheduler profile runs plain, so GPU pods still
// schedule), node agents and the custom metrics API server.
func SetupLocalCluster(spec string) env.Func {
	return func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		start := time.Now()
		copts := cluster.Options{Logf: func(f string, a ...any) {
			fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
		}}
		withReal, err := wantRealNode()
		if err != nil {
			return ctx, err
		}
		if withReal {
			copts.RealNode = &cluster.RealNodeOptions{}
		}
		c := cluster.New(copts)
		ctx = context.WithValue(ctx, clusterKey{}, c)
		fail := func(err error) (context.Context, error) {
			c.DumpLogs(os.Stderr, 40)
			return ctx, err
		}
		if err := c.Start(ctx); err != nil {
			return fail(err)
		}
		cfg.WithKubeconfigFile(c.Kubeconfig())
		opts := cluster.NodeOptions{}
		switch os.Getenv(EnvPublisher) {
		case "agent":
			opts.Publisher = cluster.PublishNodeAgent
		case "inprocess":
			opts.Publisher = cluster.PublishInProcess
		}
		if _, err := c.AddGPUNodes(ctx, spec, opts); err != nil {
			return fail(err)
		}
		if c.HasBin("webhook") {
			if err := c.StartWebhook(ctx, cluster.WebhookOptions{}); err != nil {
				return fail(err)
			}
		}
		if c.HasBin("extender") {
			err = c.StartExtender(ctx, cluster.ExtenderOptions{})
		} else {
			err = c.StartMlplaneScheduler(ctx, "", "")
		}
		if err != nil {
			return fail(err)
		}
		if c.HasBin(cluster.MetricsAPIServer) {
			if err := c.StartMetricsAPIServer(ctx, cluster.MetricsAPIServerOptions{}); err != nil {
				return fail(err)
			}
		}
		fmt.Fprintf(os.Stderr, "local cluster ready in %s: %s; export KUBECONFIG=%s\n",
			time.Since(start).Round(time.Millisecond), strings.Join(c.Components(), ", "), c.Kubeconfig())
		return ctx, nil
	}
}

// SetupRealNodeCluster is the env.Func of suites that install mlplane as
// pods (test/install): it starts the local cluster with its real node and
// no mlplane process, nor GPU nodes. Without a real node (EnvRealNode, see
// wantRealNode) it starts nothing and RequireRealNode skips every test.
func SetupRealNodeCluster() env.Func {
	return func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		withReal, err := wantRealNode()
		if err != nil || !withReal {
			return ctx, err
		}
		c := cluster.New(cluster.Options{RealNode: &cluster.RealNodeOptions{}, Logf: func(f string, a ...any) {
			fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
		}})
		ctx = context.WithValue(ctx, clusterKey{}, c)
		if err := c.Start(ctx); err != nil {
			c.DumpLogs(os.Stderr, 40)
			return ctx, err
		}
		cfg.WithKubeconfigFile(c.Kubeconfig())
		return ctx, nil
	}
}

// wantRealNode reads EnvRealNode; on "auto" it says on stderr why a host
// gets no real node (the real-node features then report SKIPPED).
func wantRealNode() (bool, error) {
	mode := os.Getenv(EnvRealNode)
	bin, err := cluster.DefaultBinDir()
	if err != nil {
		return false, err
	}
	why := cluster.RealNodeSupported(bin)
	switch mode {
	case "", "auto":
		if why != nil {
			fmt.Fprintf(os.Stderr, "no real node in the local cluster (%s=auto): %v\n", EnvRealNode, why)
		}
		return why == nil, nil
	case "on":
		if why != nil {
			return false, fmt.Errorf("%s=on: %w", EnvRealNode, why)
		}
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("%s=%q: want auto, on or off", EnvRealNode, mode)
}

// RequireRealNode returns the local cluster when it has a real node, and
// otherwise skips the test saying that a skip is not a pass.
func RequireRealNode(ctx context.Context, t *testing.T) *cluster.Cluster {
	t.Helper()
	c := Local(ctx)
	if c == nil || c.RealNodeName() == "" {
		t.Skipf("SKIPPED, NOT PASSED: the local cluster has no real node (%s; needs root and make tools)", EnvRealNode)
	}
	return c
}

// StopLocalCluster is the env.Func that stops the local cluster. A failed
// stop (a real node that left the host changed) is also kept for
// TeardownError: e2e-framework only logs a Finish step's error.
func StopLocalCluster() env.Func {
	return func(ctx context.Context, _ *envconf.Config) (context.Context, error) {
		if c := Local(ctx); c != nil {
			if err := c.Stop(); err != nil {
				teardownErr = err
				fmt.Fprintf(os.Stderr, "stopping the local cluster: %v\n", err)
				return ctx, err
			}
		}
		return ctx, nil
	}
}

var teardownErr error

// TeardownError is StopLocalCluster's error, for TestMain's exit code.
func TeardownError() error { return teardownErr }

// DumpLogsOnFailure is a per-test hook: when a test failed, it prints the
// tail of every local component's log.
func DumpLogsOnFailure(ctx context.Context, _ *envconf.Config, t *testing.T) (context.Context, error) {
	if c := Local(ctx); c != nil && t.Failed() {
		var b bytes.Buffer
		c.DumpLogs(&b, 40)
		t.Log(b.String())
	}
	return ctx, nil
}

// Clientset is a clientset for the cluster under test.
func Clientset(t *testing.T, cfg *envconf.Config) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.KubeconfigFile())
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = cluster.ClientQPS, cluster.ClientBurst
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// KubectlPath is bin/kubectl (built by make tools) when it exists, else
// kubectl from PATH.
func KubectlPath() string {
	if bin, err := cluster.DefaultBinDir(); err == nil {
		if p := filepath.Join(bin, "kubectl"); isExecutable(p) {
			return p
		}
	}
	return "kubectl"
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

// Kubectl runs the real kubectl against the cluster under test, with stdin
// when it is not empty, and returns its combined output.
func Kubectl(ctx context.Context, cfg *envconf.Config, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, KubectlPath(), append([]string{"--kubeconfig", cfg.KubeconfigFile()}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// CreateNamespace creates a namespace with a random name from prefix and
// labels, deletes it when the test ends, and waits until its default
// ServiceAccount exists (pods are refused before that).
func CreateNamespace(ctx context.Context, t *testing.T, cfg *envconf.Config, prefix string, labels map[string]string) string {
	t.Helper()
	cs := Clientset(t, cfg)
	name := envconf.RandomName(prefix, len(prefix)+7)
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	err = wait.For(func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(100*time.Millisecond))
	if err != nil {
		t.Fatalf("namespace %s: default ServiceAccount: %v", name, err)
	}
	return name
}

// WaitPods waits until the pods of namespace ns matching selector number
// n and each satisfies ok, and returns them. On timeout it fails the test
// with what it saw last.
func WaitPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector string, n int, timeout time.Duration, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var why string
	err := wait.For(func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			why = err.Error()
			return false, nil
		}
		pods = list.Items
		if len(pods) != n {
			why = fmt.Sprintf("%d pods, want %d", len(pods), n)
			return false, nil
		}
		for i := range pods {
			if ok != nil && !ok(&pods[i]) {
				why = fmt.Sprintf("pod %s: phase %s, node %q", pods[i].Name, pods[i].Status.Phase, pods[i].Spec.NodeName)
				return false, nil
			}
		}
		return true, nil
	}, wait.WithContext(ctx), wait.WithTimeout(timeout), wait.WithInterval(250*time.Millisecond))
	if err != nil {
		t.Fatalf("pods %q in %s: %v (last: %s)", selector, ns, err, why)
	}
	return pods
}

// AddAgentlessNode adds one KWOK GPU node of spec (cluster.ParseNodeSpec,
// one node) named from prefix, whose GPUs nobody publishes: the test starts
// its node agent (c.StartNodeAgent). When the test ends, the agent is
// stopped and the node removed (an error then fails the test).
func AddAgentlessNode(ctx context.Context, t *testing.T, c *cluster.Cluster, spec, prefix string) string {
	t.Helper()
	node := AddNodes(ctx, t, c, spec, prefix, cluster.PublishNone)[0]
	t.Cleanup(func() { _ = c.StopComponent(cluster.NodeAgent(node)) })
	return node
}

// AddNodes adds the KWOK GPU nodes of spec named from prefix, their GPUs
// published by publisher, and removes them when the test ends (an error
// then fails the test).
func AddNodes(ctx context.Context, t *testing.T, c *cluster.Cluster, spec, prefix string, publisher cluster.Publisher) []string {
	t.Helper()
	nodes, err := c.AddGPUNodes(ctx, spec, cluster.NodeOptions{Prefix: prefix, Publisher: publisher})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if err := c.RemoveNode(context.Background(), n); err != nil {
				t.Error(err)
			}
		}
	})
	return nodes
}

// PodRunning is a WaitPods condition: scheduled and Running.
func PodRunning(p *corev1.Pod) bool {
	return p.Spec.NodeName != "" && p.Status.Phase == corev1.PodRunning
}

// unschedulable is the message of p's PodScheduled=False condition; ok is
// false while p has none.
func unschedulable(p *corev1.Pod) (msg string, ok bool) {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse {
			return cond.Message, true
		}
	}
	return "", false
}
