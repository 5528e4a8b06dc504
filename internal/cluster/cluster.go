// Package cluster runs a real Kubernetes control plane on this machine, with
// no container engine: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and KWOK (fake nodes and pods) built from Go modules by
// hack/tools, each a local process on free loopback ports, plus mlplane's
// own binaries (webhook, extender, node agents) from bin/.
//
// The end-to-end suite (test/e2e) and make demo (hack/demo) use it:
//
//	c := cluster.New(cluster.Options{})
//	if err := c.Start(ctx); err != nil { ... }
//	defer c.Stop()
//	nodes, err := c.AddGPUNodes(ctx, "2x8x80Gi,2x4x40Gi", cluster.NodeOptions{})
//	err = c.StartWebhook(ctx, cluster.WebhookOptions{})
//	err = c.StopComponent(cluster.Webhook) // and StartComponent to restart it
//
// Where to find what, one concern per file:
//
//   - cluster.go: Options, the Cluster type, component names.
//   - lifecycle.go: Start and Stop, starting, stopping and probing
//     components (each a runner.Process, see internal/cluster/runner).
//   - binaries.go: where the binaries come from (BinDir, ModuleRoot).
//   - ports.go: the loopback ports and addresses of the components.
//   - pki.go: the CA, certificates and kubeconfigs, issued by
//     internal/certs as the product issues its own; identity.go:
//     ServiceAccount kubeconfigs.
//   - controlplane.go: etcd, kube-apiserver, kube-controller-manager,
//     kube-scheduler and KWOK, and their flags.
//   - detached.go: the detached cluster of make demo (state.json, Down).
//   - files.go: the atomic file write every configuration goes through.
//   - webhook*.go, extender*.go, schedconfig.go, metricsapiserver.go,
//     install.go: mlplane's components; spec.go, nodes.go,
//     nodeagent_spec.go, fakeload.go: the GPU nodes and their agents.
//   - the real node, the same way: realnode.go (options, start, stop),
//     realnode_host.go (host checks, baseline, cleanup),
//     realnode_network.go (routes, the guard table, CNI),
//     realnode_components.go (containerd, kubelet, kube-proxy and their
//     configuration), realnode_images.go (the registry and its images),
//     realnode_footprint.go (CPU and memory of the node and its pods).
package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// Component names, for StopComponent, StartComponent and the log files
// (<Dir>/logs/<name>.log). A node agent is NodeAgent(node).
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	KWOK              = "kwok"
	// MlplaneScheduler is the second kube-scheduler, running the profile
	// api.DefaultSchedulerName with the extender (see StartExtender).
	MlplaneScheduler = "mlplane-scheduler"
	Webhook          = "webhook"
	Extender         = "extender"
)

// NodeAgent is the component name of the node agent of one node.
func NodeAgent(node string) string { return "node-agent-" + node }

// Options configures a Cluster. The zero value is a working configuration.
type Options struct {
	// Dir holds certificates, kubeconfigs, etcd's data and the logs. Default:
	// a new temporary directory, removed by Stop.
	Dir string
	// BinDir holds the tools (make tools) and mlplane's binaries (make
	// build). Default: $MLPLANE_BIN, else bin/ at the root of the mlplane
	// module that contains the working directory.
	BinDir string
	// Detach leaves every process running when this process exits, for make
	// demo; Down stops them later. Default false: processes die with their
	// parent even if it crashes.
	Detach bool
	// StartTimeout bounds each component's wait for readiness. Default 2m.
	StartTimeout time.Duration
	// Logf receives progress lines. Default: discarded.
	Logf func(format string, args ...any)
	// RealNode, when set, adds one real node beside the KWOK nodes: a
	// kubelet on a private containerd (runc, CNI bridge) with kube-proxy,
	// labelled and tainted RealNodeLabel so that only pods meant for it
	// land there (see realnode.go). It needs root and changes the host
	// (links, routes, nftables, cgroups, mounts, sysctls); Stop undoes
	// all of it and checks the host against what it recorded before.
	// Default nil: KWOK nodes only. Not with Detach.
	RealNode *RealNodeOptions
}

// Cluster is a local control plane and the mlplane components running
// against it. Its methods are safe for concurrent use.
type Cluster struct {
	opts    Options
	dir     string
	ownsDir bool

	ca         *certs.KeyPair
	restConfig *rest.Config
	client     kubernetes.Interface
	ports      map[string]int // named ports, see port()

	mu         sync.Mutex
	components map[string]*component
	order      []string // start order; Stop goes in reverse
	nodes      map[string]NodeGroup
	webhook    *webhookState
	// extenderConfig is the extender's ServiceAccount kubeconfig, once
	// written (extenderKubeconfig).
	extenderConfig string
	// extPKI is the extender's TLS material, once issued (extenderTLS).
	extPKI    *extenderPKI
	publisher *leasePublisher
	real      *realNode // nil without Options.RealNode
}

// New returns a cluster that Start will run.
func New(opts Options) *Cluster {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	c := &Cluster{
		opts:       opts,
		ports:      map[string]int{},
		components: map[string]*component{},
		nodes:      map[string]NodeGroup{},
	}
	if opts.RealNode != nil {
		ro := *opts.RealNode
		if ro.Name == "" {
			ro.Name = "mlplane-real-0"
		}
		if ro.StateDir == "" {
			ro.StateDir = DefaultRealNodeStateDir
		}
		c.real = &realNode{opts: ro}
	}
	return c
}

// Dir is the directory holding the cluster's files.
func (c *Cluster) Dir() string { return c.dir }

// Kubeconfig is the path of an admin (system:masters) kubeconfig.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.dir, "kubeconfig") }

// RESTConfig is an admin client configuration (QPS ClientQPS).
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client is an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// ensureNamespace creates a namespace with labels, or adds the labels to an
// existing one.
func ensureNamespace(ctx context.Context, client kubernetes.Interface, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	_, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: api.FieldManager})
	if apierrors.IsAlreadyExists(err) {
		if len(labels) == 0 {
			return nil
		}
		cur, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		for k, v := range labels {
			cur.Labels[k] = v
		}
		_, err = client.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{FieldManager: api.FieldManager})
		return err
	}
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}
