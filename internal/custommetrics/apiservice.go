package custommetrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	cmv1beta1 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// APIServiceNames are the APIServices that route custom.metrics.k8s.io to
// this server (config/custom-metrics/apiservice.yaml): the HPA asks
// v1beta2 and falls back to v1beta1.
var APIServiceNames = []string{
	cmv1beta2.SchemeGroupVersion.Version + "." + custom_metrics.GroupName,
	cmv1beta1.SchemeGroupVersion.Version + "." + custom_metrics.GroupName,
}

// APIServiceBundle is the caBundle of the APIServices Names: what the
// aggregator trusts this server's serving certificate with. The
// self-signed mode keeps it (certs.SelfSigned).
type APIServiceBundle struct {
	Client aggregator.Interface
	Names  []string
}

var _ certs.BundleTarget = APIServiceBundle{}

// UpdateCABundle implements certs.BundleTarget. Every APIService that
// exists is updated; the missing ones are reported as NotFound.
func (b APIServiceBundle) UpdateCABundle(ctx context.Context, bundle func(old []byte) []byte) (bool, error) {
	cli := b.Client.ApiregistrationV1().APIServices()
	changed := false
	var errs []error
	for _, name := range b.Names {
		svc, err := cli.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("APIService %s: %w", name, err))
			continue
		}
		nb := bundle(svc.Spec.CABundle)
		if bytes.Equal(nb, svc.Spec.CABundle) {
			continue
		}
		svc = svc.DeepCopy()
		svc.Spec.CABundle = nb
		if _, err := cli.Update(ctx, svc, metav1.UpdateOptions{FieldManager: api.FieldManager}); err != nil {
			errs = append(errs, fmt.Errorf("update caBundle of APIService %s: %w", name, err))
			continue
		}
		changed = true
	}
	return changed, errors.Join(errs...)
}

func (b APIServiceBundle) String() string {
	return "APIServices " + strings.Join(b.Names, ", ")
}
