package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/hack/images/imagebuild"
	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster/hoststate"
)

// The real node's components (StopComponent, LogPath).
const (
	Containerd = "containerd"
	Kubelet    = "kubelet"
	KubeProxy  = "kube-proxy"
	// Registry is the node's image registry when it runs as a process
	// (RealNodeOptions.RegistryCommand).
	Registry = "registry"
)

// RealNodeLabel marks the real node: it carries the label RealNodeLabel=true
// and the taint RealNodeLabel=true:NoSchedule, so only pods that select and
// tolerate it land there (RealNodePod does both).
const RealNodeLabel = "mlplane.io/real-node"

// Host names the real node owns. The kernel here has no dummy driver, so a
// bridge without ports holds the service range (kube-proxy's IPVS mode uses
// a dummy link the same way).
const (
	realBridge  = "mlpbr0"
	realSvcLink = "mlpsvc0"
	// guardTable is the nftables table (family inet) that drops what
	// would leave the host from the cluster's ranges.
	guardTable = "mlplane-realnode"
	// realCgroup is the kubelet's cgroupRoot, in every hierarchy.
	realCgroup = "mlplane-realnode"
	// DefaultRealNodeStateDir holds the host baseline (baseline.json) and
	// the lock: one real node per host, and a crashed run is cleaned up by
	// the next one.
	DefaultRealNodeStateDir = hoststate.DefaultDir
)

// RealNodeOptions configures the real node (Options.RealNode).
type RealNodeOptions struct {
	// Name of the node. Default "mlplane-real-0".
	Name string
	// StateDir holds the host baseline and the lock. Default
	// DefaultRealNodeStateDir.
	StateDir string
	// RegistryCommand runs the registry the node pulls from as a process
	// (argv; "--addr=127.0.0.1:PORT" is appended) that must serve the OCI
	// distribution API there, for example `demo registry`. The process
	// inherits the host lock as its fd 3 and so holds it while it runs:
	// with Options.Detach (make demo) the node outlives this process, and
	// no other real node starts until Down. Default: go-containerregistry's
	// registry in this process, which a detached cluster cannot use.
	RegistryCommand []string
}

// realNode is the real node's state in a Cluster.
type realNode struct {
	opts     RealNodeOptions
	dir      string // <cluster dir>/realnode
	lock     *hoststate.Lock
	base     *hoststate.Snapshot
	registry *imagebuild.Registry // nil when it runs as a process
	regAddr  string               // 127.0.0.1:PORT
}

func (r *realNode) path(elem ...string) string {
	return filepath.Join(append([]string{r.dir}, elem...)...)
}

// RealNodeName is the real node's name, "" without one.
func (c *Cluster) RealNodeName() string {
	if c.real == nil {
		return ""
	}
	return c.real.opts.Name
}

// startRealNode starts the registry, containerd, the kubelet and kube-proxy,
// and waits until the node is Ready.
func (c *Cluster) startRealNode(ctx context.Context) error {
	r := c.real
	start := time.Now()
	if err := c.startRegistry(ctx); err != nil {
		return err
	}
	if err := c.pushPodbinImages(ctx); err != nil {
		return err
	}
	for _, step := range []func() (*component, error){c.containerd, c.kubelet, c.kubeProxy} {
		comp, err := step()
		if err != nil {
			return err
		}
		if err := c.run(ctx, comp); err != nil {
			return err
		}
	}
	c.opts.Logf("cluster: real node %s ready in %s (registry %s, pods %s on %s)", r.opts.Name,
		time.Since(start).Round(time.Millisecond), r.regAddr, RealPodCIDR, realBridge)
	return nil
}

// stopRealNode undoes the real node's host changes once its processes are
// stopped, and verifies the host against the baseline.
func (c *Cluster) stopRealNode() error {
	r := c.real
	var errs []error
	if r.registry != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, r.registry.Close(ctx))
		cancel()
		r.registry = nil
	}
	if r.base != nil {
		start := time.Now()
		err := hoststate.Restore(r.base, c.opts.Logf)
		if err == nil {
			err = os.Remove(baselineFile(r.opts.StateDir))
			r.base = nil
			c.opts.Logf("cluster: host restored and verified in %s", time.Since(start).Round(time.Millisecond))
		}
		errs = append(errs, err)
	}
	errs = append(errs, r.lock.Release())
	r.lock = nil
	return errors.Join(errs...)
}

// RealNodePod adds to pod what lands it on the real node (the node selector
// RealNodeLabel=true and the toleration of its taint) and returns it.
func RealNodePod(pod *corev1.Pod) *corev1.Pod {
	if pod.Spec.NodeSelector == nil {
		pod.Spec.NodeSelector = map[string]string{}
	}
	pod.Spec.NodeSelector[RealNodeLabel] = "true"
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{
		Key: RealNodeLabel, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule,
	})
	return pod
}

// ModelServerDeployment is a Deployment of the example model server
// (examples/model-server) on the real node, as a user writes it: the model
// and the GPU memory as annotations, nothing of mlplane's injection.
type ModelServerDeployment struct {
	// Name is the Deployment's name and its pods' app label.
	Name string
	// Namespace, "" for kubectl's -n.
	Namespace string
	// ModelURI, ModelSecret and GPUMemory are the annotations
	// mlplane.io/model-uri, mlplane.io/model-secret and
	// mlplane.io/gpu-memory ("4Gi").
	ModelURI, ModelSecret, GPUMemory string
	// Image is the model server's image.
	Image string
}

// YAML is the Deployment's manifest, for kubectl apply: one replica, on
// the real node (RealNodePod's selector and toleration), serving on :8080
// with a readiness probe every second.
func (d ModelServerDeployment) YAML() string {
	tmpl := RealNodePod(&corev1.Pod{})
	nodeSel, _ := json.Marshal(tmpl.Spec.NodeSelector)
	tols, _ := json.Marshal(tmpl.Spec.Tolerations)
	ns := ""
	if d.Namespace != "" {
		ns = "\n  namespace: " + d.Namespace
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s%[2]s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
      annotations:
        %[3]s: %[4]q
        %[5]s: %[6]q
        %[7]s: %[8]q
    spec:
      nodeSelector: %[9]s
      tolerations: %[10]s
      terminationGracePeriodSeconds: 1
      containers:
      - name: server
        image: %[11]s
        args: ["--addr=:8080"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        readinessProbe:
          httpGet: {path: /readyz, port: 8080}
          periodSeconds: 1
`, d.Name, ns, api.AnnotationModelURI, d.ModelURI, api.AnnotationModelSecret, d.ModelSecret,
		api.AnnotationGPUMemory, d.GPUMemory, nodeSel, tols, d.Image)
}
