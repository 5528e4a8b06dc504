package score

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/mlplane/mlplane/internal/api"
)

// PodRequest is the pod's GPU request: from its annotations when the webhook
// set them, otherwise one GPU of the ResourceGPUMemory (a quantity of MiB)
// the pod requests as Kubernetes counts it for scheduling (podGPUMemory):
// init containers included. ok is false for a pod that needs no GPU. err is
// set, and ok false, for a request that cannot be met as written: an invalid
// annotation (api.GPURequestFromAnnotations), or a resource total above
// api.MaxGPUMemoryMiB.
func PodRequest(pod *corev1.Pod) (req api.GPURequest, ok bool, err error) {
	req, ok, err = api.GPURequestFromAnnotations(pod.Annotations)
	if ok || err != nil {
		return req, ok, err
	}
	total := podGPUMemory(pod)
	if total.Sign() <= 0 {
		return api.GPURequest{}, false, nil
	}
	if total.CmpInt64(api.MaxGPUMemoryMiB) > 0 {
		return api.GPURequest{}, false, fmt.Errorf("resource %s: the containers ask for more than one GPU can have (at most %d MiB)", api.ResourceGPUMemory, api.MaxGPUMemoryMiB)
	}
	return api.GPURequest{MemoryMiB: total.Value(), Count: 1}, true, nil
}

// podGPUMemory is the pod's effective request of ResourceGPUMemory, computed
// by Kubernetes' own rule (k8s.io/component-helpers/resource.PodRequests, what
// kube-scheduler's NodeResourcesFit and the kubelet's admission use): the
// larger of the largest init container and the sum of the main containers,
// where a restartable init container (a native sidecar) adds to the sum and
// to every init container that starts after it. A container's request is its
// limit when it sets no request (the API server's defaulting for extended
// resources, which a pod from a simulator or a test may not have been
// through). Pod overhead is left out: it is per pod, not per GPU.
func podGPUMemory(pod *corev1.Pod) resource.Quantity {
	gpuOnly := func(cs []corev1.Container) ([]corev1.Container, bool) {
		out := make([]corev1.Container, len(cs))
		found := false
		for i := range cs {
			out[i] = corev1.Container{Name: cs[i].Name, RestartPolicy: cs[i].RestartPolicy}
			q, has := cs[i].Resources.Requests[api.ResourceGPUMemory]
			if !has {
				q, has = cs[i].Resources.Limits[api.ResourceGPUMemory]
			}
			if has {
				out[i].Resources.Requests = corev1.ResourceList{api.ResourceGPUMemory: q}
				found = true
			}
		}
		return out, found
	}
	main, inMain := gpuOnly(pod.Spec.Containers)
	inits, inInits := gpuOnly(pod.Spec.InitContainers)
	if !inMain && !inInits {
		return resource.Quantity{}
	}
	only := &corev1.Pod{Spec: corev1.PodSpec{Containers: main, InitContainers: inits}}
	return resourcehelper.PodRequests(only, resourcehelper.PodResourcesOptions{ExcludeOverhead: true, SkipPodLevelResources: true})[api.ResourceGPUMemory]
}

// ContainerRequestMiB is the pod's effective request of ResourceGPUMemory
// in MiB, as Kubernetes counts it (podGPUMemory): what its containers were
// given when the pod was created, which no update can change (the API
// server refuses to resize extended resources). ok is false when no
// container requests the resource, or the total is above what MaxGPUCount
// GPUs of api.MaxGPUMemoryMiB could hold.
func ContainerRequestMiB(pod *corev1.Pod) (mib int64, ok bool) {
	total := podGPUMemory(pod)
	if total.Sign() <= 0 || total.CmpInt64(api.MaxGPUCount*api.MaxGPUMemoryMiB) > 0 {
		return 0, false
	}
	return total.Value(), true
}

// PodOf is what the extender knows of pod: its key, its GPU request
// (PodRequest), its placement override and its GPU models
// (api.GPUModelsFromAnnotations). ok is false for a pod that needs no GPU;
// err reports every invalid annotation.
func PodOf(pod *corev1.Pod) (p Pod, ok bool, err error) {
	req, ok, err := PodRequest(pod)
	if !ok || err != nil {
		return Pod{}, ok, err
	}
	models, err := api.GPUModelsFromAnnotations(pod.Annotations)
	if err != nil {
		return Pod{}, false, err
	}
	return Pod{Key: string(pod.UID), Request: req, Override: pod.Annotations[api.AnnotationPlacement], Models: models}, true, nil
}

// Placer applies one validated PlacementPolicy. It is immutable; a policy
// reload builds a new one.
type Placer struct {
	policy                      PlacementPolicy
	node, gpu, multi            Strategy
	wNode, wGPU, wProtect, wFrg float64
}

// NewPlacer builds a Placer from a policy, defaulting and validating it.
func NewPlacer(p *PlacementPolicy) (*Placer, error) {
	cp := *p
	SetDefaults(&cp)
	if errs := Validate(&cp); len(errs) > 0 {
		return nil, fmt.Errorf("placement policy: %w", errs.ToAggregate())
	}
	return &Placer{
		policy: cp,
		node:   Strategies[cp.NodeStrategy](),
		gpu:    Strategies[cp.GPUStrategy](),
		multi:  Strategies[cp.MultiGPU.GPUStrategy](),
		wNode:  float64(*cp.Weights.Node), wGPU: float64(*cp.Weights.GPU),
		wProtect: float64(*cp.Weights.ProtectEmptyGPUs), wFrg: float64(*cp.MultiGPU.Fragmentation),
	}, nil
}

// Policy is the defaulted policy the Placer applies.
func (p *Placer) Policy() PlacementPolicy { return p.policy }

// Pod is what the extender knows of the pod being placed.
type Pod struct {
	// Key identifies the pod's assignment in the Cluster (its UID).
	Key string
	// Request is the pod's GPU need.
	Request api.GPURequest
	// Override is the value of annotation mlplane.io/placement, if any.
	Override string
	// Models are the GPU models the pod may use; the zero value allows all.
	Models api.GPUModels
}

// Facts are computed once per scheduling call for one pod, then applied to
// every candidate node.
type Facts struct {
	req                        api.GPURequest
	nodeS, gpuS                Strategy
	wNode, wGPU, wProtect, wFr float64
	// own is the pod's existing assignment (a bind that failed half way, or
	// one the extender lost track of); its memory is free for the pod itself.
	own     Assignment
	ownNode *Node
	// scratch is reused by Score across the nodes of one call.
	scratch []int
	// models are the GPU models the pod may use, and allowed caches
	// models.Allows per model name for the nodes of one call.
	models  api.GPUModels
	allowed map[string]bool
}

// Facts computes the per-pod facts for pod against cluster c.
func (p *Placer) Facts(c *Cluster, pod Pod) (*Facts, error) {
	if pod.Request.Count < 1 || pod.Request.MemoryMiB <= 0 {
		return nil, fmt.Errorf("invalid GPU request: %d MiB on %d GPUs", pod.Request.MemoryMiB, pod.Request.Count)
	}
	f := &Facts{req: pod.Request, nodeS: p.node, gpuS: p.gpu, wNode: p.wNode, wGPU: p.wGPU, wProtect: p.wProtect, models: pod.Models}
	if !pod.Models.Any() {
		f.allowed = map[string]bool{}
	}
	if pod.Request.Count > 1 {
		f.gpuS, f.wFr = p.multi, p.wFrg
	}
	if pod.Override != "" && *p.policy.AllowPodOverride {
		ctor, ok := Strategies[pod.Override]
		if !ok {
			return nil, fmt.Errorf("annotation %s: unknown strategy %q, want one of %s", api.AnnotationPlacement, pod.Override, strings.Join(StrategyNames(), ", "))
		}
		f.nodeS, f.gpuS = ctor(), ctor()
	}
	if !f.gpuS.ProtectsEmpty {
		f.wProtect = 0
	}
	if a, ok := c.Assignment(pod.Key); ok && pod.Key != "" {
		f.own = a
		if len(a.GPUs) > 0 {
			f.ownNode = c.gpuNode[a.GPUs[0]]
		}
	}
	return f, nil
}

// Request is the pod's GPU need.
func (f *Facts) Request() api.GPURequest { return f.req }

// allows reports whether the pod may use a GPU of model, through the
// call's cache.
func (f *Facts) allows(model string) bool {
	if f.allowed == nil {
		return true
	}
	ok, seen := f.allowed[model]
	if !seen {
		ok = f.models.Allows(model)
		f.allowed[model] = ok
	}
	return ok
}

// modelsMixed reports whether n has healthy GPUs of models the pod may not
// use beside ones it may (some) or only those (none).
func (f *Facts) modelsMixed(n *Node) (some, excluded bool) {
	if f.allowed == nil {
		return true, false
	}
	for i := range n.GPUs {
		if !n.GPUs[i].Healthy {
			continue
		}
		if f.allows(n.GPUs[i].Model) {
			some = true
		} else {
			excluded = true
		}
	}
	return some, excluded
}

// view is n as the pod sees it: with the pod's own earlier assignment, if it
// is on n, given back, and the GPUs of models the pod may not use taken
// out (as if unhealthy). Only such nodes pay for a copy.
func (f *Facts) view(n *Node) *Node {
	_, excluded := f.modelsMixed(n)
	if n != f.ownNode && !excluded {
		return n
	}
	v := *n
	v.GPUs = slices.Clone(n.GPUs)
	v.free, v.gpuFree = nil, nil
	for i := range v.GPUs {
		if n == f.ownNode && slices.Contains(f.own.GPUs, v.GPUs[i].UUID) {
			v.GPUs[i].AssignedMiB -= f.own.MemoryMiB
		}
		if excluded && !f.allows(v.GPUs[i].Model) {
			v.GPUs[i].Healthy = false
		}
	}
	v.refresh()
	return &v
}

// modelSummary lists n's healthy GPUs by model, in the agent's order:
// "NVIDIA H100 80GB HBM3 x1, NVIDIA L4 x2".
func modelSummary(n *Node) string {
	var models []string
	counts := map[string]int{}
	for _, g := range n.GPUs {
		if !g.Healthy {
			continue
		}
		if counts[g.Model] == 0 {
			models = append(models, g.Model)
		}
		counts[g.Model]++
	}
	if len(models) == 0 {
		return "no healthy GPU"
	}
	for i, m := range models {
		models[i] = fmt.Sprintf("%s x%d", m, counts[m])
	}
	return strings.Join(models, ", ")
}

// Reason codes, a metric label each.
const (
	ReasonUnknownNode   = "UnknownNode"
	ReasonNoInventory   = "NoInventory"
	ReasonAgentDown     = "AgentDown"
	ReasonTooFewGPUs    = "TooFewGPUs"
	ReasonGPUTooSmall   = "GPUTooSmall"
	ReasonInsufficient  = "InsufficientMemory"
	ReasonInvalidPodReq = "InvalidRequest"
	ReasonGPUModel      = "GPUModel"
)

// Reason says why a pod does not fit a node.
type Reason struct {
	// Code is one of the Reason* constants.
	Code string
	// Message is for the person reading kubectl describe pod.
	Message string
	// Resolvable is true when removing pods could make room (preemption may
	// help); false when the node can never take the pod as it is.
	Resolvable bool
}

// Fit reports whether the pod fits node n (nil: unknown to the extender) at
// time now (Unix nanoseconds), and why not. It is the filter verb's check.
func (f *Facts) Fit(name string, n *Node, now int64) (bool, Reason) {
	if n == nil {
		return false, Reason{Code: ReasonUnknownNode, Message: "node has no GPU inventory (no " + api.NodeAnnotationGPUs + " annotation seen)"}
	}
	if n.Problem != "" {
		return false, Reason{Code: ReasonNoInventory, Message: n.Problem}
	}
	if n.LeaseExpiry == NoLease {
		return false, Reason{Code: ReasonAgentDown, Message: fmt.Sprintf("node agent Lease %s/%s not found", api.LeaseNamespace, api.LeaseName(name))}
	}
	if now > n.LeaseExpiry {
		ago := time.Duration(now - n.LeaseExpiry).Round(time.Second)
		return false, Reason{Code: ReasonAgentDown, Message: fmt.Sprintf("node agent Lease %s/%s expired %s ago", api.LeaseNamespace, api.LeaseName(name), ago)}
	}
	if some, _ := f.modelsMixed(n); !some {
		return false, Reason{Code: ReasonGPUModel, Message: fmt.Sprintf("no GPU %s (node has %s)", f.models, modelSummary(n))}
	}
	n = f.view(n)
	k, m := f.req.Count, f.req.MemoryMiB
	if len(n.free) >= k && n.free[k-1] >= m {
		return true, Reason{}
	}
	return false, f.why(n)
}

// why explains a failed fit; only failures pay for the message.
func (f *Facts) why(n *Node) Reason {
	k, m := f.req.Count, f.req.MemoryMiB
	healthy := len(n.free)
	if healthy < k {
		if !f.models.Any() {
			return Reason{Code: ReasonGPUModel, Message: fmt.Sprintf("node has %d healthy %s %s, pod needs %d", healthy, gpus(healthy), f.models, k)}
		}
		return Reason{Code: ReasonTooFewGPUs, Message: fmt.Sprintf("node has %d healthy GPUs, pod needs %d", healthy, k)}
	}
	big := 0
	for _, g := range n.GPUs {
		if g.Healthy && g.CapacityMiB >= m {
			big++
		}
	}
	if big < k {
		return Reason{Code: ReasonGPUTooSmall, Message: fmt.Sprintf("largest GPU has %d MiB, pod needs %d MiB per GPU on %d %s", n.largestHealthy, m, k, gpus(k))}
	}
	if k == 1 {
		return Reason{Code: ReasonInsufficient, Resolvable: true, Message: fmt.Sprintf("largest free GPU has %d MiB, pod needs %d MiB per GPU on 1 GPU", n.free[0], m)}
	}
	enough := 0
	for _, fr := range n.free {
		if fr >= m {
			enough++
		}
	}
	return Reason{Code: ReasonInsufficient, Resolvable: true, Message: fmt.Sprintf("%d %s with at least %d MiB free, pod needs %d MiB per GPU on %d GPUs (free per GPU: %s MiB)", enough, gpus(enough), m, m, k, joinInts(n.free))}
}

func gpus(n int) string {
	if n == 1 {
		return "GPU"
	}
	return "GPUs"
}

func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// Pick chooses the pod's GPUs on node n, returning their UUIDs, or nil when
// the pod does not fit. Bind and the simulator use it; Score rates exactly
// this choice.
func (f *Facts) Pick(n *Node) []string {
	n = f.view(n)
	idx := pickGPUsInto(nil, n.gpuFree, f.req.MemoryMiB, f.req.Count, f.gpuS.FullestFirst)
	if idx == nil {
		return nil
	}
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = n.GPUs[j].UUID
	}
	return out
}

// Score is the node's raw score for the pod, for a node that passed Fit;
// higher is better. Normalize turns a call's raw scores into 0..MaxScore.
func (f *Facts) Score(n *Node) float64 {
	n = f.view(n)
	k, m := f.req.Count, f.req.MemoryMiB
	idx := pickGPUsInto(f.scratch, n.gpuFree, m, k, f.gpuS.FullestFirst)
	if idx == nil {
		return 0
	}
	f.scratch = idx
	var gpuSum, broken float64
	for _, i := range idx {
		g := &n.GPUs[i]
		gpuSum += f.gpuS.Score(m, g.CapacityMiB-n.gpuFree[i], g.CapacityMiB)
		if g.AssignedMiB == 0 {
			broken++
		}
	}
	s := f.wNode*f.nodeS.Score(f.req.TotalMiB(), n.usedMiB, n.capacityMiB) +
		f.wGPU*gpuSum/float64(k) -
		f.wProtect*MaxScore*broken/float64(k)
	if f.wFr > 0 {
		s += f.wFr * FragmentationScore(stranded(n.GPUs, n.gpuFree, idx, m), n.capacityMiB)
	}
	return s
}

// stranded is the free memory left on partly used healthy GPUs of a node once
// the pod holds m MiB on each GPU in picked.
func stranded(gpus []GPU, gpuFree []int64, picked []int, m int64) int64 {
	var s int64
	for i, g := range gpus {
		if !g.Healthy {
			continue
		}
		free, assigned := gpuFree[i], g.AssignedMiB
		if slices.Contains(picked, i) {
			free, assigned = free-m, assigned+m
		}
		if assigned > 0 && free > 0 {
			s += free
		}
	}
	return s
}

// FragmentationScore is higher the less of a node's capacity is left
// stranded on partly used GPUs: (capacity-stranded)/capacity.
func FragmentationScore(stranded, capacity int64) float64 {
	return LeastAllocated(stranded, 0, capacity)
}

// Normalize maps one call's raw scores to 0..MaxScore: the best nodes get
// MaxScore and no other node does, so the scheduler's choice is the
// placer's choice even though the extender API has only 11 levels; the rest
// spread linearly over 0..MaxScore-1.
func Normalize(raw []float64) []int64 {
	out := make([]int64, len(raw))
	if len(raw) == 0 {
		return out
	}
	lo, hi := slices.Min(raw), slices.Max(raw)
	const eps = 1e-9
	for i, r := range raw {
		switch {
		case r >= hi-eps:
			out[i] = MaxScore
		default:
			out[i] = int64((r - lo) / (hi - lo) * (MaxScore - 1))
		}
	}
	return out
}
