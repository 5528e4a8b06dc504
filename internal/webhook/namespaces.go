package webhook

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NamespaceLister gives the labels of a namespace.
type NamespaceLister interface {
	NamespaceLabels(ctx context.Context, name string) (map[string]string, error)
}

// NamespaceListerFunc adapts a function to NamespaceLister.
type NamespaceListerFunc func(ctx context.Context, name string) (map[string]string, error)

// NamespaceLabels calls f.
func (f NamespaceListerFunc) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	return f(ctx, name)
}

// PolicyLister gives the LimitRanges and ResourceQuotas of a namespace,
// which the API server applies to the containers mlplane adds too
// (internal/mutate/policies.go).
type PolicyLister interface {
	NamespacePolicies(ctx context.Context, namespace string) ([]corev1.LimitRange, []corev1.ResourceQuota, error)
}

// PolicyListerFunc adapts a function to PolicyLister.
type PolicyListerFunc func(ctx context.Context, namespace string) ([]corev1.LimitRange, []corev1.ResourceQuota, error)

// NamespacePolicies calls f.
func (f PolicyListerFunc) NamespacePolicies(ctx context.Context, namespace string) ([]corev1.LimitRange, []corev1.ResourceQuota, error) {
	return f(ctx, namespace)
}

var (
	_ PolicyLister    = PolicyListerFunc(nil)
	_ PolicyLister    = (*clusterNamespaces)(nil)
	_ NamespaceLister = NamespaceListerFunc(nil)
	_ NamespaceLister = StaticNamespaces(nil)
	_ NamespaceLister = (*clusterNamespaces)(nil)
)

// StaticNamespaces is a fixed map from namespace to labels, for tests and
// `webhook inject`; an unknown namespace has no labels.
type StaticNamespaces map[string]map[string]string

// NamespaceLabels returns the map's entry.
func (s StaticNamespaces) NamespaceLabels(_ context.Context, name string) (map[string]string, error) {
	return s[name], nil
}

// clusterNamespaces reads namespace metadata from an informer cache and, for
// a namespace the cache has not seen yet (created a moment ago), directly
// from the API server.
type clusterNamespaces struct {
	cache  client.Reader
	direct client.Reader
}

func namespaceMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return m
}

func (c *clusterNamespaces) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	ns := namespaceMeta()
	err := c.cache.Get(ctx, client.ObjectKey{Name: name}, ns)
	if apierrors.IsNotFound(err) {
		err = c.direct.Get(ctx, client.ObjectKey{Name: name}, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the labels of namespace %s: %w", name, err)
	}
	return ns.Labels, nil
}

// NamespacePolicies lists the namespace's LimitRanges and ResourceQuotas
// from the informer cache.
func (c *clusterNamespaces) NamespacePolicies(ctx context.Context, namespace string) ([]corev1.LimitRange, []corev1.ResourceQuota, error) {
	var lrs corev1.LimitRangeList
	if err := c.cache.List(ctx, &lrs, client.InNamespace(namespace)); err != nil {
		return nil, nil, fmt.Errorf("listing the LimitRanges of namespace %s: %w", namespace, err)
	}
	var quotas corev1.ResourceQuotaList
	if err := c.cache.List(ctx, &quotas, client.InNamespace(namespace)); err != nil {
		return nil, nil, fmt.Errorf("listing the ResourceQuotas of namespace %s: %w", namespace, err)
	}
	return lrs.Items, quotas.Items, nil
}
