package gpu

import (
	"context"
	"encoding/json"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/api"
)

// API is the part of the Kubernetes API the agent uses. NewRESTAPI talks to
// an API server with a client that knows only Nodes, Pods and Leases: the
// full clientset registers every API group at start-up and alone would take
// the agent past its 20 MiB memory budget. Tests adapt client-go's fake
// clientset to it.
type API interface {
	ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	// PatchNode patches a Node, or one of its subresources ("status").
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, subresource ...string) (*corev1.Node, error)
	ListPods(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error)
	CreateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	UpdateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	// CreateEvent records a core/v1 Event; GetNamespace reads a Namespace
	// (its labels); EvictPod evicts a pod through the Eviction API
	// (policy/v1), preconditioned on its UID. They serve pods over their
	// GPU memory budget.
	CreateEvent(ctx context.Context, event *corev1.Event) error
	GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error)
	EvictPod(ctx context.Context, namespace, name string, uid types.UID) error
}

// restAPI implements API with two REST clients, for the core and the
// coordination.k8s.io groups.
type restAPI struct {
	core, coord *rest.RESTClient
	params      runtime.ParameterCodec
}

// NewRESTAPI returns an API over cfg.
func NewRESTAPI(cfg *rest.Config) (API, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordinationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	codecs := serializer.NewCodecFactory(scheme)
	client := func(gv schema.GroupVersion, path string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion = &gv
		c.APIPath = path
		c.NegotiatedSerializer = codecs.WithoutConversion()
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		return rest.RESTClientFor(c)
	}
	core, err := client(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	coord, err := client(coordinationv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	return &restAPI{core: core, coord: coord, params: runtime.NewParameterCodec(scheme)}, nil
}

func (r *restAPI) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	err := r.core.Get().Resource("nodes").VersionedParams(&opts, r.params).Do(ctx).Into(out)
	return out, err
}

func (r *restAPI) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return r.core.Get().Resource("nodes").VersionedParams(&opts, r.params).Watch(ctx)
}

func (r *restAPI) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, subresource ...string) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := r.core.Patch(pt).Resource("nodes").Name(name).SubResource(subresource...).
		VersionedParams(&metav1.PatchOptions{FieldManager: api.FieldManager}, r.params).
		Body(data).Do(ctx).Into(out)
	return out, err
}

func (r *restAPI) ListPods(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	out := &corev1.PodList{}
	err := r.core.Get().Resource("pods").VersionedParams(&opts, r.params).Do(ctx).Into(out)
	return out, err
}

func (r *restAPI) GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.coord.Get().Namespace(namespace).Resource("leases").Name(name).Do(ctx).Into(out)
	return out, err
}

func (r *restAPI) CreateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.coord.Post().Namespace(l.Namespace).Resource("leases").
		VersionedParams(&metav1.CreateOptions{FieldManager: api.FieldManager}, r.params).
		Body(l).Do(ctx).Into(out)
	return out, err
}

func (r *restAPI) UpdateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.coord.Put().Namespace(l.Namespace).Resource("leases").Name(l.Name).
		VersionedParams(&metav1.UpdateOptions{FieldManager: api.FieldManager}, r.params).
		Body(l).Do(ctx).Into(out)
	return out, err
}

func (r *restAPI) CreateEvent(ctx context.Context, e *corev1.Event) error {
	return r.core.Post().Namespace(e.Namespace).Resource("events").
		VersionedParams(&metav1.CreateOptions{FieldManager: api.FieldManager}, r.params).
		Body(e).Do(ctx).Error()
}

func (r *restAPI) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	out := &corev1.Namespace{}
	err := r.core.Get().Resource("namespaces").Name(name).Do(ctx).Into(out)
	return out, err
}

// EvictPod posts a policy/v1 Eviction. The body is encoded here: the
// agent's scheme knows only core/v1 and coordination/v1.
func (r *restAPI) EvictPod(ctx context.Context, namespace, name string, uid types.UID) error {
	body, err := json.Marshal(&policyv1.Eviction{
		TypeMeta:      metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
		ObjectMeta:    metav1.ObjectMeta{Namespace: namespace, Name: name},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}},
	})
	if err != nil {
		return err
	}
	return r.core.Post().Namespace(namespace).Resource("pods").Name(name).SubResource("eviction").
		SetHeader("Content-Type", "application/json").Body(body).Do(ctx).Error()
}
