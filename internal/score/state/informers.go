package state

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/mlplane/mlplane/internal/api"
)

// Start runs the Node, Lease and Pod informers feeding s and returns once
// their caches have synced, so that nothing is served from a partial view.
// They stop with ctx.
func (s *State) Start(ctx context.Context, client kubernetes.Interface) error {
	all := informers.NewSharedInformerFactory(client, 0)
	leases := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(api.LeaseNamespace))

	nodes := all.Core().V1().Nodes().Informer()
	if _, err := nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.OnNode(o.(*corev1.Node)) },
		UpdateFunc: func(_, o any) { s.OnNode(o.(*corev1.Node)) },
		DeleteFunc: func(o any) {
			if n, ok := unwrap(o).(*corev1.Node); ok {
				s.OnNodeDelete(n.Name)
			}
		},
	}); err != nil {
		return err
	}
	pods := all.Core().V1().Pods().Informer()
	// Keep only what placement needs; a large cluster has many pods.
	if err := pods.SetTransform(trimPod); err != nil {
		return err
	}
	if err := pods.AddIndexers(cache.Indexers{nodeNameIndex: podNodeName}); err != nil {
		return err
	}
	s.pods.Store(&podStore{pods.GetIndexer()})
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.OnPod(o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { s.OnPod(o.(*corev1.Pod)) },
		DeleteFunc: func(o any) {
			if p, ok := unwrap(o).(*corev1.Pod); ok {
				s.OnPodDelete(p.UID)
			}
		},
	}); err != nil {
		return err
	}
	ls := leases.Coordination().V1().Leases().Informer()
	if _, err := ls.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.OnLease(o.(*coordinationv1.Lease)) },
		UpdateFunc: func(_, o any) { s.OnLease(o.(*coordinationv1.Lease)) },
		DeleteFunc: func(o any) {
			if l, ok := unwrap(o).(*coordinationv1.Lease); ok {
				s.OnLeaseDelete(l)
			}
		},
	}); err != nil {
		return err
	}
	all.Start(ctx.Done())
	leases.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nodes.HasSynced, pods.HasSynced, ls.HasSynced) {
		return fmt.Errorf("informer caches did not sync: %w", context.Cause(ctx))
	}
	return nil
}

// SeedFromAPI lists every pod with a quorum read and seeds s with what the
// informer may not have delivered yet (see Seed). A new leader calls it
// before it binds anything.
func (s *State) SeedFromAPI(ctx context.Context, client kubernetes.Interface) (int, error) {
	list, err := client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{ResourceVersion: ""})
	if err != nil {
		return 0, fmt.Errorf("listing pods: %w", err)
	}
	return s.Seed(list.Items), nil
}

// podStore is the pod informer's cache.
type podStore struct{ cache.Indexer }

// nodeNameIndex indexes the cached pods by spec.nodeName.
const nodeNameIndex = "spec.nodeName"

func podNodeName(o any) ([]string, error) {
	if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
		return []string{p.Spec.NodeName}, nil
	}
	return nil, nil
}

// PodsOnNode lists the informer's pods bound to node (trimmed as Pod's;
// not to be modified); nil before Start.
func (s *State) PodsOnNode(node string) []*corev1.Pod {
	st := s.pods.Load()
	if st == nil {
		return nil
	}
	objs, err := st.ByIndex(nodeNameIndex, node)
	if err != nil {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// Pod is the informer's copy of a pod (trimmed to what placement reads; not
// to be modified); ok is false before Start or for a pod it does not hold.
func (s *State) Pod(namespace, name string) (*corev1.Pod, bool) {
	st := s.pods.Load()
	if st == nil {
		return nil, false
	}
	o, ok, err := st.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := o.(*corev1.Pod)
	return p, ok
}

func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

// trimPod drops everything placement and preemption do not read from a
// cached pod. Preemption reads the labels (PodDisruptionBudget selectors),
// the priority, the preemption policy, the nominated node and the start
// time.
func trimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	ann := map[string]string{}
	for _, k := range []string{api.AnnotationGPUIDs, api.AnnotationGPUMemory, api.AnnotationGPUCount, api.AnnotationPlacement, api.AnnotationGPUModel, api.AnnotationGPUModelAvoid} {
		if v, ok := p.Annotations[k]; ok {
			ann[k] = v
		}
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Annotations: ann, Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			NodeName: p.Spec.NodeName, SchedulerName: p.Spec.SchedulerName,
			Priority: p.Spec.Priority, PreemptionPolicy: p.Spec.PreemptionPolicy,
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase, NominatedNodeName: p.Status.NominatedNodeName, StartTime: p.Status.StartTime},
	}
	out.Spec.Containers = trimContainers(p.Spec.Containers)
	out.Spec.InitContainers = trimContainers(p.Spec.InitContainers)
	return out, nil
}

// trimContainers keeps of each container what score.PodRequest reads: the
// name, the restart policy (a native sidecar counts beside the main
// containers) and the api.ResourceGPUMemory request and limit.
func trimContainers(cs []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, c := range cs {
		var rr corev1.ResourceRequirements
		if q, ok := c.Resources.Requests[api.ResourceGPUMemory]; ok {
			rr.Requests = corev1.ResourceList{api.ResourceGPUMemory: q}
		}
		if q, ok := c.Resources.Limits[api.ResourceGPUMemory]; ok {
			rr.Limits = corev1.ResourceList{api.ResourceGPUMemory: q}
		}
		out = append(out, corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy, Resources: rr})
	}
	return out
}
