package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"k8s.io/client-go/kubernetes"

	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// HPASyncPeriod is how often kube-controller-manager's
// HorizontalPodAutoscaler controller evaluates every HPA (its default is
// 15s): short, so that the autoscaling e2e and the demo see a scale within
// seconds of a load change. With no HPA it costs nothing.
const HPASyncPeriod = 3 * time.Second

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
	if err := renameio.WriteFile(cfgPath, b, 0o644); err != nil {
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
	if err := renameio.WriteFile(cfgPath, []byte(strings.Join(stages, "\n---\n")+"\n"), 0o644); err != nil {
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
