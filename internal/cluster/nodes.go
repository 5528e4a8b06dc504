package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// Publisher says who publishes a fake node's GPU inventory, capacity and
// Lease: what the node agent does on a real node.
type Publisher int

const (
	// PublishAuto runs real node agents when bin/node-agent exists and the
	// cluster would have at most MaxNodeAgents of them, else PublishInProcess.
	PublishAuto Publisher = iota
	// PublishInProcess writes the annotation and capacity once and renews
	// the Leases from a goroutine of this process: cheap enough for 1000
	// nodes.
	PublishInProcess
	// PublishNodeAgent runs one bin/node-agent process per node with the
	// fake backend (--backend fake --fake-spec GPUSxSIZE).
	PublishNodeAgent
	// PublishNone creates the nodes with no inventory, capacity or Lease: a
	// test starts its own agent or publisher.
	PublishNone
)

// MaxNodeAgents is the most node-agent processes PublishAuto starts.
const MaxNodeAgents = 16

// NodeOptions configures AddGPUNodes.
type NodeOptions struct {
	// Prefix names the nodes <Prefix><n>, n counting from the number of
	// nodes the cluster already has with that prefix. Default "gpu-node-".
	Prefix string
	// Publisher, default PublishAuto.
	Publisher Publisher
	// Labels are added to every node.
	Labels map[string]string
	// Concurrency is how many nodes are created at once. Default 32.
	Concurrency int
}

// Fake node resources besides the GPUs: generous, so that GPU memory is the
// only thing that runs out.
var fakeNodeResources = corev1.ResourceList{
	corev1.ResourceCPU:              resource.MustParse("64"),
	corev1.ResourceMemory:           resource.MustParse("512Gi"),
	corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	corev1.ResourcePods:             resource.MustParse("110"),
}

// AddGPUNodes creates KWOK nodes from a spec such as "4x8x80Gi" or
// "2x8x80Gi,2x4x40Gi" (see ParseNodeSpec), has their GPUs published, and
// waits until every node is Ready and carries its inventory. It returns the
// node names in creation order.
func (c *Cluster) AddGPUNodes(ctx context.Context, spec string, opts NodeOptions) ([]string, error) {
	groups, err := ParseNodeSpec(spec)
	if err != nil {
		return nil, err
	}
	if opts.Prefix == "" {
		opts.Prefix = "gpu-node-"
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 32
	}
	total := 0
	for _, g := range groups {
		total += g.Count
	}
	if opts.Publisher == PublishAuto {
		opts.Publisher = PublishInProcess
		if c.HasBin("node-agent") && c.nodeAgentCount()+total <= MaxNodeAgents {
			opts.Publisher = PublishNodeAgent
		}
	}

	type job struct {
		name  string
		group NodeGroup
	}
	var jobs []job
	c.mu.Lock()
	next := 0
	for name := range c.nodes {
		var n int
		if _, err := fmt.Sscanf(name, opts.Prefix+"%d", &n); err == nil && n >= next {
			next = n + 1
		}
	}
	for _, g := range groups {
		for range g.Count {
			name := fmt.Sprintf("%s%d", opts.Prefix, next)
			next++
			c.nodes[name] = g
			jobs = append(jobs, job{name, g})
		}
	}
	c.mu.Unlock()

	withInventory := opts.Publisher == PublishInProcess
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, opts.Concurrency)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = createNode(ctx, c.client, j.name, j.group, opts.Labels, withInventory)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.name
	}

	switch opts.Publisher {
	case PublishInProcess:
		if err := c.leases().add(ctx, names); err != nil {
			return nil, err
		}
	case PublishNodeAgent:
		var comps []*component
		for _, j := range jobs {
			comp, err := c.nodeAgent(j.name, j.group.GPUSpec())
			if err != nil {
				return nil, err
			}
			comps = append(comps, comp)
		}
		if err := c.runAll(ctx, comps...); err != nil {
			return nil, err
		}
	}
	c.opts.Logf("cluster: waiting for %d nodes (%s) to be Ready", len(names), spec)
	if err := WaitNodesReady(ctx, c.client, names, opts.Publisher != PublishNone, 3*time.Minute); err != nil {
		return nil, err
	}
	return names, nil
}

// Nodes returns the GPU nodes created so far and their groups.
func (c *Cluster) Nodes() map[string]NodeGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]NodeGroup, len(c.nodes))
	for k, v := range c.nodes {
		out[k] = v
	}
	return out
}

// NodeNames returns the GPU nodes' names, sorted.
func (c *Cluster) NodeNames() []string {
	return slices.Sorted(maps.Keys(c.Nodes()))
}

func (c *Cluster) nodeAgentCount() int {
	n := 0
	for _, name := range c.Components() {
		if len(name) > len(NodeAgent("")) && name[:len(NodeAgent(""))] == NodeAgent("") {
			n++
		}
	}
	return n
}

// nodeAgent is bin/node-agent for node with the fake backend reading
// fakeSpec, extra flags after the common ones; ready once /healthz answers.
func (c *Cluster) nodeAgent(node, fakeSpec string, extra ...string) (*component, error) {
	metrics, err := c.port(NodeAgent(node) + "-metrics")
	if err != nil {
		return nil, err
	}
	health, err := c.port(NodeAgent(node) + "-health")
	if err != nil {
		return nil, err
	}
	comp := c.newComponent(NodeAgent(node), "node-agent", append([]string{"run",
		"--node-name=" + node,
		"--kubeconfig=" + c.Kubeconfig(),
		"--backend=fake",
		"--fake-spec=" + fakeSpec,
		"--poll-interval=1s",
		fmt.Sprintf("--metrics-addr=127.0.0.1:%d", metrics),
		fmt.Sprintf("--health-addr=127.0.0.1:%d", health),
	}, extra...)...)
	comp.Env = []string{"NODE_NAME=" + node}
	comp.ready = runner.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/healthz", health), false)
	return comp, nil
}

// createNode creates a KWOK node; withInventory also publishes what the node
// agent would: the inventory annotation and the GPU memory capacity.
func createNode(ctx context.Context, client kubernetes.Interface, name string, g NodeGroup, labels map[string]string, withInventory bool) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				corev1.LabelHostname:           name,
				corev1.LabelOSStable:           "linux",
				corev1.LabelArchStable:         "amd64",
				corev1.LabelInstanceTypeStable: "fake-" + g.GPUSpec(),
				"type":                         "kwok",
			},
			Annotations: map[string]string{KWOKNodeAnnotation: kwokNodeValue},
		},
		Status: corev1.NodeStatus{
			Capacity:    fakeNodeResources.DeepCopy(),
			Allocatable: fakeNodeResources.DeepCopy(),
		},
	}
	for k, v := range labels {
		node.Labels[k] = v
	}
	if withInventory {
		gpus := FakeGPUs(name, g)
		node.Annotations[api.NodeAnnotationGPUs] = api.EncodeInventory(gpus)
		mem := *resource.NewQuantity(api.HealthyMemoryMiB(gpus), resource.DecimalSI)
		node.Status.Capacity[api.ResourceGPUMemory] = mem
		node.Status.Allocatable[api.ResourceGPUMemory] = mem
	}
	// A node's status may be set on create; KWOK's node-initialize stage
	// keeps capacity and allocatable that are already there.
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{FieldManager: api.FieldManager}); err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	return nil
}

// WaitNodesReady polls until every named node is Ready and, when
// withInventory, carries api.NodeAnnotationGPUs and a non-zero allocatable
// api.ResourceGPUMemory.
func WaitNodesReady(ctx context.Context, client kubernetes.Interface, names []string, withInventory bool, timeout time.Duration) error {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	var missing []string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, nil // transient; the timeout reports it
		}
		ok := map[string]bool{}
		for i := range list.Items {
			n := &list.Items[i]
			if !want[n.Name] || !nodeReady(n) {
				continue
			}
			if withInventory {
				q := n.Status.Allocatable[api.ResourceGPUMemory]
				if n.Annotations[api.NodeAnnotationGPUs] == "" || q.IsZero() {
					continue
				}
			}
			ok[n.Name] = true
		}
		missing = missing[:0]
		for _, n := range names {
			if !ok[n] {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		if len(missing) > 5 {
			missing = append(missing[:5], fmt.Sprintf("and %d more", len(missing)-5))
		}
		return fmt.Errorf("nodes not Ready with their GPUs: %v: %w", missing, err)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// leasePublisher renews the node agents' Leases for nodes whose agent is
// simulated in-process.
type leasePublisher struct {
	client kubernetes.Interface
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	leases map[string]*coordinationv1.Lease
}

func (c *Cluster) leases() *leasePublisher {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.publisher == nil {
		ctx, cancel := context.WithCancel(context.Background())
		c.publisher = &leasePublisher{client: c.client, cancel: cancel, done: make(chan struct{}), leases: map[string]*coordinationv1.Lease{}}
		go c.publisher.run(ctx)
	}
	return c.publisher
}

// RenewLeases keeps the Leases of nodes up to date until ctx ends, as the
// node agents would: make demo runs it in a detached helper process, because
// its nodes must stay alive after `make demo` returns.
func RenewLeases(ctx context.Context, client kubernetes.Interface, nodes []string) error {
	p := &leasePublisher{client: client, done: make(chan struct{}), leases: map[string]*coordinationv1.Lease{}}
	if err := p.add(ctx, nodes); err != nil {
		return err
	}
	p.run(ctx)
	return nil
}

func (p *leasePublisher) add(ctx context.Context, nodes []string) error {
	var errs []error
	for _, n := range nodes {
		l, err := p.renew(ctx, n, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.mu.Lock()
		p.leases[n] = l
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (p *leasePublisher) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(api.LeaseRenewInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		cur := make(map[string]*coordinationv1.Lease, len(p.leases))
		for k, v := range p.leases {
			cur[k] = v
		}
		p.mu.Unlock()
		// Concurrently, as a node agent per node would: one after the
		// other, 1,000 renewals against a busy API server (100 ms each)
		// take longer than api.LeaseDuration, and Leases expire.
		sem := make(chan struct{}, leaseRenewWorkers)
		var wg sync.WaitGroup
		for n, l := range cur {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if nl, err := p.renew(ctx, n, l); err == nil {
					p.mu.Lock()
					p.leases[n] = nl
					p.mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
}

// leaseRenewWorkers bounds the Lease renewals in flight.
const leaseRenewWorkers = 32

func (p *leasePublisher) stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
}

// renew creates or updates the Lease of node; last is the previous object.
func (p *leasePublisher) renew(ctx context.Context, node string, last *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	leases := p.client.CoordinationV1().Leases(api.LeaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	if last != nil {
		l := last.DeepCopy()
		l.Spec.RenewTime = &now
		nl, err := leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: api.FieldManager})
		if err == nil {
			return nl, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	cur, err := leases.Get(ctx, api.LeaseName(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		holder := node
		secs := int32(api.LeaseDuration / time.Second)
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: api.LeaseName(node), Namespace: api.LeaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       &holder,
				LeaseDurationSeconds: &secs,
				AcquireTime:          &now,
				RenewTime:            &now,
			},
		}
		return leases.Create(ctx, l, metav1.CreateOptions{FieldManager: api.FieldManager})
	}
	if err != nil {
		return nil, err
	}
	cur.Spec.RenewTime = &now
	return leases.Update(ctx, cur, metav1.UpdateOptions{FieldManager: api.FieldManager})
}
