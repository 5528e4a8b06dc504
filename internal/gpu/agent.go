package gpu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/mlplane/mlplane/internal/api"
)

// Options configure an Agent. Zero values take the stated defaults, applied
// once in NewAgent.
type Options struct {
	// NodeName is the node the agent runs on (required).
	NodeName string
	// Client talks to the API server (required): NewRESTAPI.
	Client API
	// Backend reads the GPUs (required; None on a node without NVML).
	Backend Backend
	// BackendName ("nvml", "fake") and BackendReason (why it is None) are
	// exported as metrics.
	BackendName   string
	BackendReason string
	// PollInterval is how often the GPUs are read (default 1s).
	PollInterval time.Duration
	// ReportInterval is the least time between two annotation writes caused
	// by used memory alone (default 30s). Membership and health changes are
	// written at once.
	ReportInterval time.Duration
	// UsedThresholdMiB is how far a GPU's used memory must move from the
	// published value before it is worth a write (default 1024).
	UsedThresholdMiB int64
	// LeaseRenewInterval (default api.LeaseRenewInterval) and LeaseDuration
	// (default api.LeaseDuration) shape the liveness Lease.
	LeaseRenewInterval time.Duration
	LeaseDuration      time.Duration
	// Clock is the time source (default the real clock); tests inject a fake.
	Clock clock.WithTicker
	// Nodes supplies the agent's own Node without a GET per poll (default an
	// informer on that one Node, started by Run).
	Nodes NodeSource
	// PodUIDs maps GPU process IDs to pod UIDs (default ProcPodUIDs).
	PodUIDs interface {
		PodUID(pid uint32) (string, bool)
	}
	// Pods names pods by UID (default a field-selected list of this node's
	// pods, refreshed on a miss at most every ReportInterval).
	Pods PodNamer
	// OverBudgetToleranceMiB is how far a pod's processes may go over its
	// booking on a GPU before it counts as over budget (default 512: a CUDA
	// context alone takes about 600 MiB beyond what an application
	// allocates, which a booking sized for the allocations leaves out).
	OverBudgetToleranceMiB int64
	// OverBudgetAfter is how long a pod must stay over budget before its
	// Warning event, and between two eviction attempts (default 30s).
	OverBudgetAfter time.Duration
	// EvictOverBudget lets the agent evict pods that stay over budget in
	// namespaces labelled api.LabelEvictOverBudget=true (default false).
	EvictOverBudget bool
	// MetricsEndpoint, "host:port", is published as the Node's
	// api.NodeAnnotationAgentMetrics (default: not published).
	MetricsEndpoint string
	// Registerer receives the metrics (default none).
	Registerer prometheus.Registerer
	// Log is the logger (default discard).
	Log logr.Logger
}

// NodeSource returns the freshest copy of a Node the caller has; ok is false
// when it has none yet.
type NodeSource interface {
	Node() (node *corev1.Node, ok bool)
}

// NodeSourceFunc adapts a function to NodeSource.
type NodeSourceFunc func() (*corev1.Node, bool)

// Node calls f.
func (f NodeSourceFunc) Node() (*corev1.Node, bool) { return f() }

var _ NodeSource = NodeSourceFunc(nil)

// PodNamer finds the pod with a UID on this node.
type PodNamer interface {
	Pod(ctx context.Context, uid string) (PodInfo, bool)
}

// PodInfo is what the agent knows of a pod with GPU processes.
type PodInfo struct {
	Namespace, Name string
	// BookedMiB is the memory the pod booked on each of its GPUs (0: none
	// or unknown).
	BookedMiB int64
}

// Agent publishes one node's GPUs. Step does one poll; Run repeats it.
type Agent struct {
	opts    Options
	log     logr.Logger
	metrics *metrics
	nodes   *nodeInformer // nil when Options.Nodes was given

	// Only the goroutine running Step touches the fields below.

	// lastPatched is the Node as our last patch returned it; it stands in
	// for the informer's copy until the informer has caught up.
	lastPatched    *corev1.Node
	lastAnnotation time.Time // when the annotation was last written
	lease          *coordinationv1.Lease
	lastRenew      time.Time
	backendFailing bool
	// nodeRetry and leaseRetry space out retries after failed writes, so
	// that a fleet of agents does not hammer a struggling API server.
	nodeRetry, leaseRetry backoff

	// over tracks the pods over their GPU memory budget, by pod UID and
	// GPU UUID.
	over map[[2]string]*overBudget

	mu       sync.Mutex
	lastStep time.Time
	ready    bool
}

// overBudget is one pod's episode over its booking on one GPU.
type overBudget struct {
	since     time.Time
	reported  bool
	lastEvict time.Time
}

// NewAgent checks opts and applies the defaults.
func NewAgent(opts Options) (*Agent, error) {
	var errs []error
	if opts.NodeName == "" {
		errs = append(errs, errors.New("node name is required (--node-name or NODE_NAME)"))
	}
	if opts.Client == nil {
		errs = append(errs, errors.New("a Kubernetes client is required"))
	}
	if opts.Backend == nil {
		errs = append(errs, errors.New("a GPU backend is required"))
	}
	for name, d := range map[string]time.Duration{"poll interval": opts.PollInterval, "report interval": opts.ReportInterval,
		"lease renew interval": opts.LeaseRenewInterval, "lease duration": opts.LeaseDuration} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	if opts.OverBudgetToleranceMiB < 0 || opts.OverBudgetAfter < 0 {
		errs = append(errs, fmt.Errorf("over-budget tolerance %d MiB and time %s must not be negative", opts.OverBudgetToleranceMiB, opts.OverBudgetAfter))
	}
	if opts.UsedThresholdMiB < 0 {
		errs = append(errs, fmt.Errorf("used-memory threshold %d MiB is negative", opts.UsedThresholdMiB))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = time.Second
	}
	if opts.ReportInterval == 0 {
		opts.ReportInterval = 30 * time.Second
	}
	if opts.UsedThresholdMiB == 0 {
		opts.UsedThresholdMiB = 1024
	}
	if opts.OverBudgetToleranceMiB == 0 {
		opts.OverBudgetToleranceMiB = 512
	}
	if opts.OverBudgetAfter == 0 {
		opts.OverBudgetAfter = 30 * time.Second
	}
	if opts.LeaseRenewInterval == 0 {
		opts.LeaseRenewInterval = api.LeaseRenewInterval
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = api.LeaseDuration
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.PodUIDs == nil {
		opts.PodUIDs = NewProcPodUIDs("")
	}
	if opts.Pods == nil {
		opts.Pods = newPodLister(opts.Client, opts.NodeName, opts.Clock, opts.ReportInterval)
	}
	if opts.Log.GetSink() == nil {
		opts.Log = logr.Discard()
	}
	a := &Agent{opts: opts, log: opts.Log.WithValues("node", opts.NodeName), over: map[[2]string]*overBudget{}}
	if opts.Nodes == nil {
		a.nodes = newNodeInformer(opts.Client, opts.NodeName)
		a.opts.Nodes = a.nodes
	}
	a.metrics = newMetrics(opts.NodeName, opts.BackendName, opts.BackendReason)
	if opts.Registerer != nil {
		if err := a.metrics.register(opts.Registerer); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Run polls until ctx ends. It leaves the Lease to expire on its own, so
// that a stopped agent looks exactly like a dead one.
func (a *Agent) Run(ctx context.Context) error {
	if a.nodes != nil {
		if err := a.nodes.start(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped before the first sync
			}
			return err
		}
	}
	a.log.Info("Node agent started", "backend", a.opts.BackendName, "pollInterval", a.opts.PollInterval,
		"reportInterval", a.opts.ReportInterval, "usedThresholdMiB", a.opts.UsedThresholdMiB)
	t := a.opts.Clock.NewTicker(a.opts.PollInterval)
	defer t.Stop()
	for {
		a.Step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// apiTimeout bounds every API call of a step, so that a hung API server
// cannot stall the loop forever.
const apiTimeout = 10 * time.Second

// Step reads the GPUs once, updates the metrics, writes the annotation and
// the capacity if they need it, and renews the Lease when it is due.
func (a *Agent) Step(ctx context.Context) {
	now := a.opts.Clock.Now()
	actx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	inv, devs := a.readInventory()
	usage := a.podUsage(actx, devs)
	setPodMemory(inv, devs, usage)
	a.checkOverBudget(actx, now, usage)
	a.metrics.observe(devs, usage)
	published := a.publish(actx, inv, now)
	renewed := a.renewLeaseIfDue(actx, now)

	a.mu.Lock()
	a.lastStep = now
	a.ready = a.ready || (published && renewed)
	a.mu.Unlock()
}

// readInventory reads the backend. When it fails, every GPU published so far
// is reported unhealthy: the agent cannot vouch for GPUs it cannot see.
func (a *Agent) readInventory() ([]api.GPU, []Device) {
	devs, err := a.opts.Backend.Devices()
	if err == nil {
		if a.backendFailing {
			a.log.Info("Reading the GPUs works again")
		}
		a.backendFailing = false
		a.metrics.backendUp.Set(1)
		return Inventory(devs), devs
	}
	a.metrics.backendUp.Set(0)
	a.metrics.backendErrors.Inc()
	if !a.backendFailing {
		a.log.Error(err, "Reading the GPUs failed; reporting every known GPU unhealthy until it works again")
	} else {
		a.log.V(1).Info("Reading the GPUs still fails", "err", err.Error())
	}
	a.backendFailing = true
	var inv []api.GPU
	if node, ok := a.node(); ok {
		inv, _ = api.DecodeInventory(node.Annotations[api.NodeAnnotationGPUs])
	}
	for i := range inv {
		inv[i].Healthy = false
	}
	return inv, nil
}

// node returns the freshest copy of the agent's Node: the informer's, or the
// one our last patch returned when the informer has not caught up with it.
func (a *Agent) node() (*corev1.Node, bool) {
	cached, ok := a.opts.Nodes.Node()
	if a.lastPatched == nil {
		return cached, ok
	}
	if !ok || olderThan(cached, a.lastPatched) {
		return a.lastPatched, true
	}
	a.lastPatched = nil // the informer has caught up
	return cached, true
}

// olderThan says whether a's resourceVersion is older than b's, compared as
// the API server's own clients compare them (apimachinery's
// resourceversion.CompareResourceVersion); when either is not well formed,
// a is taken as fresh.
func olderThan(a, b *corev1.Node) bool {
	c, err := resourceversion.CompareResourceVersion(a.ResourceVersion, b.ResourceVersion)
	return err == nil && c < 0
}

// change classifies how far an inventory is from the published one.
type change int

const (
	// unchanged: nothing worth a write (used memory may have moved a little).
	unchanged change = iota
	// usedMoved: some GPU's used memory moved by more than the threshold;
	// written at most once per ReportInterval.
	usedMoved
	// changed: membership, model, size or health differ, or nothing valid is
	// published; written at once.
	changed
)

// compareInventory compares the published inventory with the current one.
func compareInventory(published []api.GPU, publishedOK bool, cur []api.GPU, thresholdMiB int64) change {
	if !publishedOK || len(published) != len(cur) {
		return changed
	}
	c := unchanged
	for i := range cur {
		p, g := published[i], cur[i]
		if p.Index != g.Index || p.UUID != g.UUID || p.Model != g.Model || p.MemoryMiB != g.MemoryMiB || p.Healthy != g.Healthy {
			return changed
		}
		if d := p.UsedMiB - g.UsedMiB; d > thresholdMiB || -d > thresholdMiB {
			c = usedMoved
		}
		// Memory that bookings must leave alone going up is written at
		// once (a new pod could be placed into it); going down waits.
		if d := g.OverBookedMiB - p.OverBookedMiB; d > thresholdMiB {
			return changed
		} else if -d > thresholdMiB || (p.OverBookedMiB == 0) != (g.OverBookedMiB == 0) {
			c = usedMoved
		}
		switch po, o := p.OutsideUsedMiB, g.OutsideUsedMiB; {
		case (po == nil) != (o == nil):
			return changed
		case po != nil && *o-*po > thresholdMiB:
			return changed
		case po != nil && *po-*o > thresholdMiB:
			c = usedMoved
		}
	}
	return c
}

// publish brings the node's annotation and capacity in line with inv. It
// reports whether the node is now up to date.
func (a *Agent) publish(ctx context.Context, inv []api.GPU, now time.Time) bool {
	node, ok := a.node()
	if !ok {
		a.log.V(1).Info("Own Node not seen yet; not publishing")
		return false
	}
	if !a.nodeRetry.ready(now) {
		return false
	}
	upToDate := true
	defer func() { a.nodeRetry.done(now, upToDate) }()

	raw, has := node.Annotations[api.NodeAnnotationGPUs]
	published, err := api.DecodeInventory(raw)
	c := compareInventory(published, has && err == nil, inv, a.opts.UsedThresholdMiB)
	endpointStale := a.opts.MetricsEndpoint != "" && node.Annotations[api.NodeAnnotationAgentMetrics] != a.opts.MetricsEndpoint
	if c == changed || endpointStale || (c == usedMoved && now.Sub(a.lastAnnotation) >= a.opts.ReportInterval) {
		ann := map[string]string{api.NodeAnnotationGPUs: api.EncodeInventory(inv)}
		if a.opts.MetricsEndpoint != "" {
			ann[api.NodeAnnotationAgentMetrics] = a.opts.MetricsEndpoint
		}
		patch := map[string]any{"metadata": map[string]any{"annotations": ann}}
		if n, err := a.patchNode(ctx, writeAnnotation, patch); err != nil {
			a.log.Error(err, "Publishing the GPU inventory failed")
			upToDate = false
		} else {
			a.lastAnnotation, node = now, n
			a.log.V(2).Info("Published the GPU inventory", "gpus", len(inv), "reason", c.String())
		}
	}

	want := *resource.NewQuantity(api.HealthyMemoryMiB(inv), resource.DecimalSI)
	capacity, hasCap := node.Status.Capacity[api.ResourceGPUMemory]
	alloc, hasAlloc := node.Status.Allocatable[api.ResourceGPUMemory]
	if !hasCap || !hasAlloc || capacity.Cmp(want) != 0 || alloc.Cmp(want) != 0 {
		v := want.String()
		patch := map[string]any{"status": map[string]any{
			"capacity":    map[string]string{api.ResourceGPUMemory: v},
			"allocatable": map[string]string{api.ResourceGPUMemory: v},
		}}
		if _, err := a.patchNode(ctx, writeStatus, patch, "status"); err != nil {
			a.log.Error(err, "Publishing the GPU memory capacity failed")
			upToDate = false
		} else if hasCap {
			a.log.Info("Set the GPU memory capacity", "resource", api.ResourceGPUMemory, "from", capacity.String(), "to", v)
		} else {
			a.log.Info("Set the GPU memory capacity", "resource", api.ResourceGPUMemory, "to", v)
		}
	}
	return upToDate
}

func (c change) String() string {
	switch c {
	case usedMoved:
		return "used memory moved"
	case changed:
		return "inventory changed"
	}
	return "unchanged"
}

// Kinds of API write, as counted in mlplane_node_agent_api_writes_total.
const (
	writeAnnotation = "node_annotation"
	writeStatus     = "node_status"
	writeLease      = "lease"
)

// patchNode sends a JSON merge patch and remembers the Node it returns.
func (a *Agent) patchNode(ctx context.Context, kind string, patch any, subresource ...string) (*corev1.Node, error) {
	body, err := json.Marshal(patch)
	if err != nil {
		panic(err) // maps of strings always marshal
	}
	n, err := a.opts.Client.PatchNode(ctx, a.opts.NodeName, types.MergePatchType, body, subresource...)
	a.metrics.write(kind, err)
	if err != nil {
		return nil, err
	}
	a.lastPatched = n
	return n, nil
}

// renewLeaseIfDue creates or renews the node's Lease every
// LeaseRenewInterval; after a failure it retries at the next poll. It
// reports whether the Lease is current.
func (a *Agent) renewLeaseIfDue(ctx context.Context, now time.Time) bool {
	// Polls are PollInterval apart, give or take scheduling: allow half of
	// one, so that a renewal is not pushed a whole poll past its due time.
	if a.lease != nil && now.Sub(a.lastRenew) < a.opts.LeaseRenewInterval-a.opts.PollInterval/2 {
		return true
	}
	if !a.leaseRetry.ready(now) {
		return false
	}
	err := a.renewLease(ctx, now)
	a.leaseRetry.done(now, err == nil)
	if err != nil {
		a.log.Error(err, "Renewing the Lease failed", "lease", api.LeaseNamespace+"/"+api.LeaseName(a.opts.NodeName), "retryIn", a.leaseRetry.delay)
		a.lease = nil // read it afresh next time
		return false
	}
	a.lastRenew = now
	return true
}

func (a *Agent) renewLease(ctx context.Context, now time.Time) error {
	name := api.LeaseName(a.opts.NodeName)
	renew := metav1.NewMicroTime(now)
	if a.lease == nil {
		l, err := a.opts.Client.GetLease(ctx, api.LeaseNamespace, name)
		switch {
		case apierrors.IsNotFound(err):
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: api.LeaseNamespace},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(a.opts.NodeName),
					LeaseDurationSeconds: ptr.To(int32(a.opts.LeaseDuration / time.Second)),
					AcquireTime:          &renew,
					RenewTime:            &renew,
				},
			}
			a.setLeaseOwner(l)
			l, err = a.opts.Client.CreateLease(ctx, l)
			a.metrics.write(writeLease, err)
			if err != nil {
				return err
			}
			a.lease = l
			return nil
		case err != nil:
			return err
		}
		a.lease = l
	}
	l := a.lease.DeepCopy()
	l.Spec.HolderIdentity = ptr.To(a.opts.NodeName)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(a.opts.LeaseDuration / time.Second))
	l.Spec.RenewTime = &renew
	a.setLeaseOwner(l)
	l, err := a.opts.Client.UpdateLease(ctx, l)
	a.metrics.write(writeLease, err)
	if err != nil {
		return err
	}
	a.lease = l
	return nil
}

// setLeaseOwner makes the Node own its Lease, as the kubelet does, so that
// deleting the Node garbage-collects the Lease.
func (a *Agent) setLeaseOwner(l *coordinationv1.Lease) {
	node, ok := a.node()
	if !ok || node.UID == "" {
		return
	}
	l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
}

// setPodMemory sets, from the pods' use of each GPU, its OutsideUsedMiB
// (its used memory less what the processes of pods on it hold; unset when
// the backend could not list the processes) and its OverBookedMiB (what its
// pods use beyond their bookings, a pod that booked nothing counting whole:
// at once and without a tolerance, since the memory is in use).
func setPodMemory(inv []api.GPU, devs []Device, usage []podUsage) {
	inPods, over := map[string]int64{}, map[string]int64{}
	for _, u := range usage {
		inPods[u.uuid] += u.usedMiB
		over[u.uuid] += max(0, u.usedMiB-u.bookedMiB)
	}
	setOutside(inv, devs, inPods)
	for i := range inv {
		inv[i].OverBookedMiB = over[inv[i].UUID]
	}
}

// checkOverBudget follows the pods that booked GPU memory and use more than
// their booking plus the tolerance on a GPU. One that stays over for
// OverBudgetAfter gets a Warning event (once per episode) and is marked in
// the metric; with EvictOverBudget, and its namespace labelled
// api.LabelEvictOverBudget=true, it is evicted through the Eviction API,
// at most once per OverBudgetAfter (a refusal, from a PodDisruptionBudget,
// is reported on the pod and retried).
func (a *Agent) checkOverBudget(ctx context.Context, now time.Time, usage []podUsage) {
	seen := map[[2]string]bool{}
	for i := range usage {
		u := &usage[i]
		if u.bookedMiB <= 0 || u.usedMiB <= u.bookedMiB+a.opts.OverBudgetToleranceMiB {
			continue
		}
		k := [2]string{u.uid, u.uuid}
		seen[k] = true
		o := a.over[k]
		if o == nil {
			o = &overBudget{since: now}
			a.over[k] = o
		}
		if now.Sub(o.since) < a.opts.OverBudgetAfter {
			continue
		}
		u.overBudget = true
		if u.name == "" {
			continue // the pod is not known (yet): no object to report on
		}
		msg := fmt.Sprintf("pod uses %d MiB of GPU memory on %s (GPU %d), more than the %d MiB it booked (tolerance %d MiB), for %s",
			u.usedMiB, u.uuid, u.gpu, u.bookedMiB, a.opts.OverBudgetToleranceMiB, now.Sub(o.since).Round(time.Second))
		if !o.reported {
			o.reported = true
			a.event(ctx, now, u, corev1.EventTypeWarning, api.EventReasonOverBudget, msg)
		}
		if a.opts.EvictOverBudget && now.Sub(o.lastEvict) >= a.opts.OverBudgetAfter {
			a.evictOverBudget(ctx, now, u, o, msg)
		}
	}
	for k := range a.over {
		if !seen[k] {
			delete(a.over, k)
		}
	}
}

// evictOverBudget evicts u's pod when its namespace opted in.
func (a *Agent) evictOverBudget(ctx context.Context, now time.Time, u *podUsage, o *overBudget, msg string) {
	ns, err := a.opts.Client.GetNamespace(ctx, u.namespace)
	if err != nil {
		a.log.Error(err, "Reading the namespace of a pod over its GPU memory budget failed", "pod", u.namespace+"/"+u.name)
		return
	}
	if ns.Labels[api.LabelEvictOverBudget] != "true" {
		return
	}
	o.lastEvict = now
	err = a.opts.Client.EvictPod(ctx, u.namespace, u.name, types.UID(u.uid))
	switch {
	case err == nil:
		a.metrics.overBudgetEvictions.WithLabelValues("evicted").Inc()
		a.event(ctx, now, u, corev1.EventTypeWarning, api.EventReasonOverBudgetEvicted, "evicted by the mlplane node agent: "+msg)
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		// gone or replaced already
	default:
		a.metrics.overBudgetEvictions.WithLabelValues("refused").Inc()
		a.event(ctx, now, u, corev1.EventTypeWarning, api.EventReasonOverBudgetEvictionRefused,
			fmt.Sprintf("eviction refused (%v); retrying in %s: %s", err, a.opts.OverBudgetAfter, msg))
	}
}

// event records a core/v1 Event on u's pod, as the kubelet records its own.
func (a *Agent) event(ctx context.Context, now time.Time, u *podUsage, eventtype, reason, msg string) {
	t := metav1.NewTime(now)
	e := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: u.namespace, Name: fmt.Sprintf("%s.%x", u.name, now.UnixNano())},
		InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: u.namespace, Name: u.name, UID: types.UID(u.uid)},
		Reason:         reason, Message: msg, Type: eventtype, Count: 1,
		FirstTimestamp: t, LastTimestamp: t,
		Source:              corev1.EventSource{Component: "mlplane-node-agent", Host: a.opts.NodeName},
		ReportingController: "mlplane.io/node-agent", ReportingInstance: a.opts.NodeName,
	}
	if err := a.opts.Client.CreateEvent(ctx, e); err != nil {
		a.log.Error(err, "Recording an event failed", "pod", u.namespace+"/"+u.name, "reason", reason)
	}
	a.log.Info(msg, "pod", u.namespace+"/"+u.name, "reason", reason)
}

// PublishedInventory is the inventory as the agent publishes it: Inventory
// with each GPU's OutsideUsedMiB, the processes mapped to pods by podUID
// (ProcPodUIDs on a node; a process it does not map is outside any pod).
func PublishedInventory(devs []Device, podUID func(pid uint32) (string, bool)) []api.GPU {
	inv := Inventory(devs)
	inPods := map[string]int64{}
	for _, d := range devs {
		for _, p := range d.Processes {
			if p.PodUID != "" {
				inPods[d.UUID] += p.UsedMiB
			} else if _, ok := podUID(p.PID); ok {
				inPods[d.UUID] += p.UsedMiB
			}
		}
	}
	setOutside(inv, devs, inPods)
	return inv
}

// setOutside sets OutsideUsedMiB from the memory of pods' processes per GPU
// UUID.
func setOutside(inv []api.GPU, devs []Device, inPods map[string]int64) {
	known := map[string]int64{}
	for _, d := range devs {
		if d.ProcessesKnown {
			known[d.UUID] = max(0, d.UsedMiB-inPods[d.UUID])
		}
	}
	for i := range inv {
		if v, ok := known[inv[i].UUID]; ok {
			inv[i].OutsideUsedMiB = &v
		}
	}
}

// podUsage sums, per pod and GPU, the memory of the GPUs' processes, and
// gives each its booking and its utilisation: the sum of its processes'
// where the backend gives per-process samples, else the GPU's utilisation
// times the pod's share of the processes' memory.
func (a *Agent) podUsage(ctx context.Context, devs []Device) []podUsage {
	var out []podUsage
	idx := map[[2]string]int{}
	for _, d := range devs {
		var procMiB int64
		for _, p := range d.Processes {
			procMiB += p.UsedMiB
		}
		first := len(out)
		for _, p := range d.Processes {
			uid := p.PodUID
			if uid == "" {
				var ok bool
				if uid, ok = a.opts.PodUIDs.PodUID(p.PID); !ok {
					continue // not in a pod (a host process, or gone)
				}
			}
			k := [2]string{uid, d.UUID}
			i, seen := idx[k]
			if !seen {
				info, _ := a.opts.Pods.Pod(ctx, uid)
				i = len(out)
				idx[k] = i
				out = append(out, podUsage{uid: uid, namespace: info.Namespace, name: info.Name, gpu: d.Index, uuid: d.UUID,
					bookedMiB: info.BookedMiB, utilSource: utilMemoryShare})
			}
			out[i].usedMiB += p.UsedMiB
			out[i].utilPercent += float64(p.UtilizationPercent)
		}
		for i := first; i < len(out); i++ {
			u := &out[i]
			switch {
			case d.ProcessUtilizationKnown:
				u.utilSource, u.utilPercent = utilProcess, min(u.utilPercent, 100)
			case procMiB > 0:
				u.utilPercent = float64(d.UtilizationPercent) * float64(u.usedMiB) / float64(procMiB)
			default:
				u.utilPercent = 0
			}
		}
	}
	return out
}

// Healthy reports an error when no step has completed for a while: a stuck
// loop should be restarted.
func (a *Agent) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	limit := 3*a.opts.PollInterval + 2*apiTimeout
	if since := a.opts.Clock.Since(a.lastStep); !a.lastStep.IsZero() && since > limit {
		return fmt.Errorf("no poll completed for %s", since.Round(time.Second))
	}
	return nil
}

// Ready reports an error until the node and the Lease have been published
// once.
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ready {
		return errors.New("not published yet")
	}
	return nil
}

// backoff spaces out retries: 1 s after the first failure, doubling up to
// maxRetryDelay, and none once a write succeeds.
type backoff struct {
	next  time.Time
	delay time.Duration
}

// maxRetryDelay is well inside api.LeaseDuration, so a Lease lost to a
// brief outage is renewed before it expires.
const maxRetryDelay = 16 * time.Second

func (b *backoff) ready(now time.Time) bool { return !now.Before(b.next) }

func (b *backoff) done(now time.Time, ok bool) {
	if ok {
		*b = backoff{}
		return
	}
	b.delay = min(max(2*b.delay, time.Second), maxRetryDelay)
	b.next = now.Add(b.delay)
}
