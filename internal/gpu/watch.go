package gpu

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mlplane/mlplane/internal/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// nodeInformer watches the agent's own Node, and only it, so each poll can
// compare against a cached copy without a GET.
type nodeInformer struct {
	name     string
	informer cache.SharedIndexInformer
}

func newNodeInformer(client API, name string) *nodeInformer {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return client.ListNodes(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return client.WatchNodes(ctx, o)
		},
	}
	// A client may say it cannot stream a watch list (client-go's fake
	// clientset); the reflector then lists and watches instead.
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), &corev1.Node{}, 0, cache.Indexers{})
	// The agent reads annotations and status; the managed fields and the
	// image list are most of a real Node's size.
	_ = inf.SetTransform(func(obj any) (any, error) {
		if n, ok := obj.(*corev1.Node); ok {
			n.ManagedFields = nil
			n.Status.Images = nil
		}
		return obj, nil
	})
	return &nodeInformer{name: name, informer: inf}
}

func (n *nodeInformer) start(ctx context.Context) error {
	go n.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), n.informer.HasSynced) {
		return fmt.Errorf("watching node %s: %w", n.name, ctx.Err())
	}
	return nil
}

func (n *nodeInformer) Node() (*corev1.Node, bool) {
	obj, ok, err := n.informer.GetStore().GetByKey(n.name)
	if err != nil || !ok {
		return nil, false
	}
	node, ok := obj.(*corev1.Node)
	return node, ok
}

// podLister finds pods by UID in a list of this node's pods, selected by
// spec.nodeName and served from the API server's watch cache. It lists only
// when asked for a UID it does not know, so a node without GPU processes
// never lists:
//   - a UID not asked for since the last list (a pod started since) lists
//     again at once, but at most once per relist gap (1 s), so a new pod's
//     series carry its name and booking from its first or second poll;
//   - a UID the last list did not have (a pod already deleted whose process
//     lingers, or one the watch cache did not show yet) is asked again after
//     interval (the agent's --report-interval), so stale UIDs together cost
//     one list per interval, not one per poll;
//   - a list that fails is tried again at the next poll after the relist
//     gap.
type podLister struct {
	client   API
	node     string
	clock    clock.Clock
	interval time.Duration

	mu   sync.Mutex
	pods map[string]PodInfo // by UID, from the last successful list
	// missed are the UIDs that list did not have, with when each was last
	// asked for (entries not asked for in two intervals are dropped).
	missed map[string]time.Time
	// listed is when that list was; lastList when the node's pods were last
	// listed, successfully or not.
	listed, lastList time.Time
}

// podRelistGap is the shortest time between two lists of the node's pods.
const podRelistGap = time.Second

func newPodLister(client API, node string, c clock.Clock, interval time.Duration) *podLister {
	return &podLister{client: client, node: node, clock: c, interval: interval, missed: map[string]time.Time{}}
}

func (p *podLister) Pod(ctx context.Context, uid string) (PodInfo, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n, ok := p.pods[uid]; ok {
		return n, true
	}
	now := p.clock.Now()
	if _, ok := p.missed[uid]; ok {
		p.missed[uid] = now
		if now.Sub(p.listed) < p.interval {
			return PodInfo{}, false
		}
	}
	if !p.lastList.IsZero() && now.Sub(p.lastList) < podRelistGap {
		return PodInfo{}, false
	}
	p.lastList = now
	list, err := p.client.ListPods(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("spec.nodeName", p.node).String(),
		ResourceVersion: "0", // served from the API server's cache
	})
	if err != nil {
		// Not a miss: the next poll after the relist gap tries again.
		return PodInfo{}, false
	}
	p.listed = now
	p.pods = make(map[string]PodInfo, len(list.Items))
	for i := range list.Items {
		p.pods[string(list.Items[i].UID)] = podInfo(&list.Items[i])
	}
	// Every UID still missing waits the interval from this list, so that
	// lingering UIDs together cost one list per interval.
	for u, asked := range p.missed {
		if _, found := p.pods[u]; found || now.Sub(asked) >= 2*p.interval {
			delete(p.missed, u) // found, or not asked for lately
		}
	}
	n, ok := p.pods[uid]
	if !ok {
		p.missed[uid] = now
	}
	return n, ok
}

// podInfo is what the agent needs of a pod: its name and what it booked
// per GPU: the mlplane.io/gpu-memory annotation, else the containers'
// mlplane.io/gpu-memory requests on one GPU (as the extender reads a pod
// without the annotations), else nothing (0). The annotations cannot change
// after creation (the gpu-assignment admission policy), so the cached copy
// stays right.
func podInfo(pod *corev1.Pod) PodInfo {
	info := PodInfo{Namespace: pod.Namespace, Name: pod.Name}
	if req, ok, err := api.GPURequestFromAnnotations(pod.Annotations); ok && err == nil {
		info.BookedMiB = req.MemoryMiB
		return info
	}
	var total int64
	for _, c := range pod.Spec.Containers {
		q, ok := c.Resources.Requests[api.ResourceGPUMemory]
		if !ok {
			q, ok = c.Resources.Limits[api.ResourceGPUMemory]
		}
		if ok {
			if mib, err := api.MemoryMiB(q); err == nil {
				total += mib
			}
		}
	}
	info.BookedMiB = total
	return info
}
