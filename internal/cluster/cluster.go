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
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
	"github.com/mlplane/mlplane/internal/cluster/runner"
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

// HPASyncPeriod is how often kube-controller-manager's
// HorizontalPodAutoscaler controller evaluates every HPA (its default is
// 15s): short, so that the autoscaling e2e and the demo see a scale within
// seconds of a load change. With no HPA it costs nothing.
const HPASyncPeriod = 3 * time.Second

// NodeAgent is the component name of the node agent of one node.
func NodeAgent(node string) string { return "node-agent-" + node }

// Client rate limits for the control plane's own clients. client-go's
// defaults (QPS 5, scheduler 50) make a 1000-node cluster crawl; see
// docs/local-cluster.md, "Settings and the errors behind them".
const (
	controlPlaneQPS   = 1000
	controlPlaneBurst = 2000
	// ClientQPS and ClientBurst are what RESTConfig carries.
	ClientQPS   = 500
	ClientBurst = 1000
)

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

// component is a process plus how to tell that it is ready.
type component struct {
	*runner.Process
	ready func(ctx context.Context) error
	// after runs once the component is ready, on every start.
	after func(ctx context.Context) error
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

// BinDir is where the binaries come from.
func (c *Cluster) BinDir() string { return c.opts.BinDir }

// Kubeconfig is the path of an admin (system:masters) kubeconfig.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.dir, "kubeconfig") }

// RESTConfig is an admin client configuration (QPS ClientQPS).
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client is an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Bin is the path of a binary in BinDir.
func (c *Cluster) Bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

// HasBin reports whether BinDir holds an executable name: the e2e suite and
// the demo use it to run what exists of mlplane so far.
func (c *Cluster) HasBin(name string) bool {
	st, err := os.Stat(c.Bin(name))
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// Start generates the PKI, starts etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and KWOK, waits until each is
// ready, and creates api.DefaultNamespace. On error, call Stop (it is safe on
// a half-started cluster); the error carries the failing component's log.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.init(); err != nil {
		return err
	}
	for _, t := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		if !c.HasBin(t) {
			return fmt.Errorf("%s not found in %s: run make tools", t, c.opts.BinDir)
		}
	}
	if c.real != nil {
		if c.opts.Detach && len(c.real.opts.RegistryCommand) == 0 {
			return errors.New("a detached real node needs RealNodeOptions.RegistryCommand: its registry must outlive this process")
		}
		if err := c.prepareRealNode(); err != nil {
			return fmt.Errorf("real node: %w", err)
		}
	}
	if err := c.writePKI(); err != nil {
		return err
	}
	for _, name := range []string{"etcd-client", "etcd-peer", APIServer, ControllerManager, Scheduler, KWOK} {
		if _, err := c.port(name); err != nil {
			return err
		}
	}
	c.opts.Logf("cluster: starting control plane in %s", c.dir)
	steps := []func() (*component, error){c.etcd, c.apiserver}
	for _, step := range steps {
		comp, err := step()
		if err != nil {
			return err
		}
		if err := c.run(ctx, comp); err != nil {
			return err
		}
	}
	// The rest start together; each waits for readiness on its own.
	var comps []*component
	for _, step := range []func() (*component, error){c.controllerManager, c.defaultScheduler, c.kwok} {
		comp, err := step()
		if err != nil {
			return err
		}
		comps = append(comps, comp)
	}
	if err := c.runAll(ctx, comps...); err != nil {
		return err
	}
	if err := ensureNamespace(ctx, c.client, api.DefaultNamespace, nil); err != nil {
		return err
	}
	c.opts.Logf("cluster: control plane ready; export KUBECONFIG=%s", c.Kubeconfig())
	if c.real != nil {
		return c.startRealNode(ctx)
	}
	return nil
}

func (c *Cluster) init() error {
	if c.opts.BinDir == "" {
		bin, err := DefaultBinDir()
		if err != nil {
			return err
		}
		c.opts.BinDir = bin
	}
	if c.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "mlplane-cluster-")
		if err != nil {
			return err
		}
		c.dir, c.ownsDir = dir, true
	} else {
		dir, err := filepath.Abs(c.opts.Dir)
		if err != nil {
			return err
		}
		c.dir = dir
	}
	for _, d := range []string{"pki", "logs", "etcd", "config"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	return nil
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

// port returns the port reserved under name, picking a free loopback port
// the first time.
func (c *Cluster) port(name string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.ports[name]; ok {
		return p, nil
	}
	// The kernel may hand out a port again once its probe listener closed;
	// never give two names the same port.
	for {
		p, err := runner.FreePort()
		if err != nil {
			return 0, err
		}
		taken := false
		for _, q := range c.ports {
			taken = taken || q == p
		}
		if !taken {
			c.ports[name] = p
			return p, nil
		}
	}
}

func (c *Cluster) addr(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	host := "127.0.0.1"
	if name == APIServer && c.real != nil {
		// pods reach the API through the kubernetes Service, so it
		// listens on the node's local-only address, not loopback
		host = RealNodeIP
	}
	return fmt.Sprintf("%s:%d", host, c.ports[name])
}

// writePKI creates the cluster CA, the API server's serving certificate, the
// service-account key, and a client certificate and kubeconfig per identity,
// all issued by the product's certificate code (internal/certs, cert-manager's
// PKI), so that every run of the harness exercises it.
func (c *Cluster) writePKI() error {
	ca, err := certs.Issue(certs.SelfSignedCACertificate("mlplane-local-cluster-ca"), nil)
	if err != nil {
		return err
	}
	c.ca = ca
	if err := writeFileAtomic(c.path("pki", "ca.crt"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	hosts := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "127.0.0.1", "10.96.0.1"}
	if c.real != nil {
		hosts = append(hosts, RealNodeIP)
	}
	serving, err := certs.Issue(certs.HostCertificate("kube-apiserver", "kube-apiserver", hosts...), ca)
	if err != nil {
		return err
	}
	if err := serving.WritePair(c.path("pki", "apiserver.crt"), c.path("pki", "apiserver.key")); err != nil {
		return err
	}
	// The front-proxy client identity: with --requestheader-client-ca-file
	// set, the kube components' delegated authentication stops logging
	// "missing content for CA bundle" every few seconds.
	proxy, err := certs.Issue(certs.ClientCertificate("front-proxy-client", "front-proxy-client"), ca)
	if err != nil {
		return err
	}
	if err := proxy.WritePair(c.path("pki", "front-proxy-client.crt"), c.path("pki", "front-proxy-client.key")); err != nil {
		return err
	}
	sa, err := newServiceAccountKey()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(c.path("pki", "sa.key"), sa, 0o600); err != nil {
		return err
	}
	if _, err := c.port(APIServer); err != nil {
		return err
	}
	ids := []struct{ file, user, group string }{
		{"kubeconfig", "mlplane-admin", "system:masters"},
		{"config/kube-controller-manager.kubeconfig", "system:kube-controller-manager", ""},
		{"config/kube-scheduler.kubeconfig", "system:kube-scheduler", ""},
	}
	if c.real != nil {
		ids = append(ids,
			struct{ file, user, group string }{"config/kubelet.kubeconfig", "system:node:" + c.RealNodeName(), "system:nodes"},
			struct{ file, user, group string }{"config/kube-proxy.kubeconfig", "system:kube-proxy", ""})
		// the API server's identity towards the kubelet (logs, exec)
		kc, err := certs.Issue(certs.ClientCertificate("kube-apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"), ca)
		if err != nil {
			return err
		}
		if err := kc.WritePair(c.path("pki", "apiserver-kubelet-client.crt"), c.path("pki", "apiserver-kubelet-client.key")); err != nil {
			return err
		}
	}
	for _, id := range ids {
		var groups []string
		if id.group != "" {
			groups = []string{id.group}
		}
		kp, err := certs.Issue(certs.ClientCertificate(filepath.Base(id.file), id.user, groups...), ca)
		if err != nil {
			return err
		}
		if err := c.writeKubeconfig(c.path(id.file), id.user, kp); err != nil {
			return err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = ClientQPS, ClientBurst
	c.restConfig = cfg
	c.client, err = kubernetes.NewForConfig(cfg)
	return err
}

func (c *Cluster) writeKubeconfig(path, user string, kp *certs.KeyPair) error {
	const name = "mlplane-local"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: "https://" + c.addr(APIServer), CertificateAuthorityData: c.ca.CertPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	cfg.CurrentContext = name
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

func (c *Cluster) newComponent(name, bin string, args ...string) *component {
	return &component{Process: &runner.Process{
		Name:    name,
		Path:    c.Bin(bin),
		Args:    args,
		LogPath: c.path("logs", name+".log"),
		Detach:  c.opts.Detach,
	}}
}

func (c *Cluster) etcd() (*component, error) {
	client, peer := c.addr("etcd-client"), c.addr("etcd-peer")
	comp := c.newComponent(Etcd, "etcd",
		"--name=mlplane-local",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls=http://"+client,
		"--advertise-client-urls=http://"+client,
		"--listen-peer-urls=http://"+peer,
		"--initial-advertise-peer-urls=http://"+peer,
		"--initial-cluster=mlplane-local=http://"+peer,
		"--log-level=warn",
		"--quota-backend-bytes=8589934592",
	)
	comp.ready = runner.HTTPProbe("http://"+client+"/health", false)
	return comp, nil
}

func (c *Cluster) apiserver() (*component, error) {
	// With a loopback advertise address the default endpoint reconciler
	// refuses to start (docs/local-cluster.md, "Settings and the errors behind them").
	bind := []string{"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"}
	if c.real != nil {
		// The real node's address: local only (held by a link of this
		// host that routes nowhere), and the kubernetes Service's
		// endpoint, so that pods reach the API through kube-proxy.
		bind = []string{"--bind-address=" + RealNodeIP, "--advertise-address=" + RealNodeIP,
			// the node's address, never a DNS lookup of its name
			"--kubelet-preferred-address-types=InternalIP",
			"--kubelet-client-certificate=" + c.path("pki", "apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + c.path("pki", "apiserver-kubelet-client.key")}
	}
	comp := c.newComponent(APIServer, "kube-apiserver", append(bind,
		"--etcd-servers=http://"+c.addr("etcd-client"),
		"--secure-port="+portOf(c.addr(APIServer)),
		"--cert-dir="+c.path("pki"),
		"--tls-cert-file="+c.path("pki", "apiserver.crt"),
		"--tls-private-key-file="+c.path("pki", "apiserver.key"),
		"--client-ca-file="+c.path("pki", "ca.crt"),
		"--requestheader-client-ca-file="+c.path("pki", "ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+c.path("pki", "front-proxy-client.crt"),
		"--proxy-client-key-file="+c.path("pki", "front-proxy-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+c.path("pki", "sa.key"),
		"--service-account-signing-key-file="+c.path("pki", "sa.key"),
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--max-requests-inflight=2000",
		"--max-mutating-requests-inflight=1000",
		"--profiling=false",
	)...)
	probeCfg := c.RESTConfig()
	probeCfg.Timeout = 5 * time.Second
	probe, err := kubernetes.NewForConfig(probeCfg)
	if err != nil {
		return nil, err
	}
	comp.ready = func(ctx context.Context) error {
		body, err := probe.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, body)
		}
		return nil
	}
	return comp, nil
}

func (c *Cluster) controllerManager() (*component, error) {
	kc := c.path("config", "kube-controller-manager.kubeconfig")
	comp := c.newComponent(ControllerManager, "kube-controller-manager",
		"--kubeconfig="+kc,
		"--authentication-kubeconfig="+kc,
		"--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1",
		"--secure-port="+portOf(c.addr(ControllerManager)),
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.path("pki", "sa.key"),
		"--root-ca-file="+c.path("pki", "ca.crt"),
		fmt.Sprintf("--kube-api-qps=%d", controlPlaneQPS),
		fmt.Sprintf("--kube-api-burst=%d", controlPlaneBurst),
		"--horizontal-pod-autoscaler-sync-period="+HPASyncPeriod.String(),
	)
	comp.ready = runner.HTTPProbe("https://"+c.addr(ControllerManager)+"/healthz", true)
	return comp, nil
}

func (c *Cluster) defaultScheduler() (*component, error) {
	cfgPath := c.path("config", "kube-scheduler.yaml")
	b, err := schedulerConfig(nil, c.path("config", "kube-scheduler.kubeconfig"), "default-scheduler", "", nil)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	return c.schedulerComponent(Scheduler, cfgPath, c.addr(Scheduler)), nil
}

func (c *Cluster) schedulerComponent(name, cfgPath, addr string) *component {
	kc := c.path("config", "kube-scheduler.kubeconfig")
	comp := c.newComponent(name, "kube-scheduler",
		"--config="+cfgPath,
		"--authentication-kubeconfig="+kc,
		"--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1",
		"--secure-port="+portOf(addr),
	)
	comp.ready = runner.HTTPProbe("https://"+addr+"/readyz", true)
	return comp
}

// kwokStageFiles are the KWOK stages build.sh copies into bin/kwok-stages:
// nodes become Ready and keep heartbeating, pods become Running.
var kwokStageFiles = []string{"node-initialize.yaml", "node-heartbeat.yaml", "pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml"}

// KWOKNodeAnnotation marks the nodes KWOK manages.
const (
	KWOKNodeAnnotation = "kwok.x-k8s.io/node"
	kwokNodeValue      = "fake"
)

func (c *Cluster) kwok() (*component, error) {
	var stages []string
	for _, f := range kwokStageFiles {
		b, err := os.ReadFile(c.Bin(filepath.Join("kwok-stages", f)))
		if err != nil {
			return nil, fmt.Errorf("KWOK stages (run make tools): %w", err)
		}
		stages = append(stages, strings.TrimSpace(string(b)))
	}
	cfgPath := c.path("config", "kwok-stages.yaml")
	if err := writeFileAtomic(cfgPath, []byte(strings.Join(stages, "\n---\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	addr := c.addr(KWOK)
	comp := c.newComponent(KWOK, "kwok",
		"--kubeconfig="+c.Kubeconfig(),
		"--config="+cfgPath,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+KWOKNodeAnnotation+"="+kwokNodeValue,
		"--server-address="+addr,
		"--cidr="+KWOKPodCIDR,
	)
	comp.ready = runner.HTTPProbe("http://"+addr+"/healthz", false)
	return comp, nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// run registers comp, starts it and waits until it is ready.
func (c *Cluster) run(ctx context.Context, comp *component) error {
	c.mu.Lock()
	if _, ok := c.components[comp.Name]; !ok {
		c.order = append(c.order, comp.Name)
	}
	c.components[comp.Name] = comp
	c.mu.Unlock()
	return c.startAndWait(ctx, comp)
}

func (c *Cluster) runAll(ctx context.Context, comps ...*component) error {
	errs := make([]error, len(comps))
	var wg sync.WaitGroup
	for i, comp := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.run(ctx, comp)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) startAndWait(ctx context.Context, comp *component) error {
	start := time.Now()
	if err := comp.Start(); err != nil {
		return err
	}
	if err := comp.WaitReady(ctx, c.opts.StartTimeout, comp.ready); err != nil {
		return err
	}
	if comp.after != nil {
		if err := comp.after(ctx); err != nil {
			return fmt.Errorf("%s: %w", comp.Name, err)
		}
	}
	c.opts.Logf("cluster: %s ready in %s (pid %d, log %s)", comp.Name, time.Since(start).Round(time.Millisecond), comp.PID(), comp.LogPath)
	return nil
}

// StopComponent stops one component (SIGTERM to its process group, SIGKILL
// after 10 s). The e2e suite uses it to take the webhook or the extender away.
func (c *Cluster) StopComponent(name string) error {
	comp, err := c.component(name)
	if err != nil {
		return err
	}
	comp.Stop(10 * time.Second)
	c.opts.Logf("cluster: %s stopped", name)
	return nil
}

// StartComponent starts a stopped component again, with the same flags and
// ports, and waits until it is ready.
func (c *Cluster) StartComponent(ctx context.Context, name string) error {
	comp, err := c.component(name)
	if err != nil {
		return err
	}
	return c.startAndWait(ctx, comp)
}

// RestartComponent is StopComponent then StartComponent.
func (c *Cluster) RestartComponent(ctx context.Context, name string) error {
	if err := c.StopComponent(name); err != nil {
		return err
	}
	return c.StartComponent(ctx, name)
}

// Running reports whether a component's process is running.
func (c *Cluster) Running(name string) bool {
	comp, err := c.component(name)
	return err == nil && comp.PID() != 0
}

// PID is the process id of a running component, 0 when it is not running
// (the benchmarks read its CPU time and memory from /proc).
func (c *Cluster) PID(name string) int {
	comp, err := c.component(name)
	if err != nil {
		return 0
	}
	return comp.PID()
}

// Components lists the components in start order.
func (c *Cluster) Components() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

// LogPath is the log file of a component.
func (c *Cluster) LogPath(name string) string { return c.path("logs", name+".log") }

func (c *Cluster) component(name string) (*component, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	comp, ok := c.components[name]
	if !ok {
		names := append([]string(nil), c.order...)
		sort.Strings(names)
		return nil, fmt.Errorf("no component %q; have %s", name, strings.Join(names, ", "))
	}
	return comp, nil
}

// DumpLogs writes the last lines of every component's log to w, for a
// failed test or demo.
func (c *Cluster) DumpLogs(w io.Writer, lines int) {
	for _, name := range c.Components() {
		fmt.Fprintf(w, "\n===== %s (last %d lines of %s) =====\n%s\n", name, lines, c.LogPath(name), runner.TailFile(c.LogPath(name), lines))
	}
}

// Stop stops every component in reverse start order and, when the cluster
// made its own directory, removes it. It is safe to call more than once, and
// on a cluster that failed to start.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	pub := c.publisher
	c.publisher = nil
	order := append([]string(nil), c.order...)
	c.mu.Unlock()
	if pub != nil {
		pub.stop()
	}
	for i := len(order) - 1; i >= 0; i-- {
		comp, err := c.component(order[i])
		if err == nil {
			comp.Stop(10 * time.Second)
		}
	}
	var errs []error
	if c.real != nil {
		// before the directory goes: the node's mounts are in it
		if err := c.stopRealNode(); err != nil {
			errs = append(errs, fmt.Errorf("real node teardown: %w", err))
		}
	}
	if c.ownsDir && c.dir != "" && os.Getenv("MLPLANE_KEEP_CLUSTER_DIR") == "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

// State is what a detached cluster leaves in <Dir>/state.json so that Down
// can stop it from another process.
type State struct {
	Kubeconfig string         `json:"kubeconfig"`
	Processes  []StateProcess `json:"processes"`
}

// StateProcess is one detached process.
type StateProcess struct {
	Name   string `json:"name"`
	PID    int    `json:"pid"`
	Binary string `json:"binary"`
}

// StateFile is where SaveState writes in a cluster directory.
func StateFile(dir string) string { return filepath.Join(dir, "state.json") }

// SaveState records the running processes in StateFile(Dir) and adds
// extra (helpers such as a lease publisher started by the caller).
func (c *Cluster) SaveState(extra ...StateProcess) error {
	st := State{Kubeconfig: c.Kubeconfig()}
	for _, name := range c.Components() {
		comp, _ := c.component(name)
		if pid := comp.PID(); pid != 0 {
			st.Processes = append(st.Processes, StateProcess{Name: name, PID: pid, Binary: comp.Path})
		}
	}
	st.Processes = append(st.Processes, extra...)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(StateFile(c.dir), b, 0o644)
}

// Down stops the detached cluster recorded in dir (reverse start order) and
// removes its state file. It only signals pids that still run the recorded
// binary. It returns the names of what it stopped.
func Down(dir string) ([]string, error) {
	b, err := os.ReadFile(StateFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", StateFile(dir), err)
	}
	var stopped []string
	for i := len(st.Processes) - 1; i >= 0; i-- {
		p := st.Processes[i]
		if runner.KillGroup(p.PID, p.Binary, 10*time.Second) {
			stopped = append(stopped, p.Name)
		}
	}
	// A real node's host changes, if a crashed run left them.
	return stopped, errors.Join(os.Remove(StateFile(dir)), CleanupRealNode("", nil))
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
