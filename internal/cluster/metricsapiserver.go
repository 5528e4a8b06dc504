package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// MetricsAPIServer is the component name of the custom metrics API server
// (bin/metrics-apiserver).
const MetricsAPIServer = "metrics-apiserver"

// MetricsAPIServerOptions configures StartMetricsAPIServer.
type MetricsAPIServerOptions struct {
	// Interval is its --interval, how often it scrapes the node agents.
	// Default DefaultMetricsInterval.
	Interval time.Duration
	// CertDir, when set, is a directory of tls.crt and tls.key that the
	// server serves in its cert-manager mode (as with cert-manager's Secret
	// mounted); the caller puts their CA into the APIServices' caBundle,
	// cainjector's job. Default: the self-signed mode, as installed by
	// config/overlays/local.
	CertDir string
	// Args are extra flags.
	Args []string
}

// DefaultMetricsInterval is the local cluster's scrape interval: short, so
// that a test or the demo sees a change within seconds (the product's
// default is 15s).
const DefaultMetricsInterval = 2 * time.Second

// MetricsAPIServerConfig is what StartMetricsAPIServer applies from the
// module's config/ first: the server's ServiceAccount and RBAC, and what
// its self-signed mode needs.
var MetricsAPIServerConfig = []string{"custom-metrics/rbac.yaml", "custom-metrics/self-signed/rbac.yaml"}

// shippedAPIServices is the APIServices file of config/, relative to the
// module root.
const shippedAPIServices = "config/custom-metrics/apiservice.yaml"

// installFieldManager is who applies config/ (ApplyConfig): objects the
// harness registers in place of shipped ones are applied by it too, so
// that a server-side dry run of the shipped objects (the config/ e2e) is an
// update by their owner rather than a conflict.
const installFieldManager = "mlplane-install"

// StartMetricsAPIServer runs bin/metrics-apiserver as the shipped
// ServiceAccount (MetricsAPIServerConfig applied) in its self-signed mode,
// on a free loopback port, and registers the shipped APIServices for it:
// their Service mlplane-metrics-apiserver becomes an ExternalName Service
// for localhost (the aggregator dials an ExternalName's host at the
// APIService's port; the local cluster has no Service network) and their
// port the server's. The server issues its own certificate for the
// Service's name and patches its CA into the APIServices, as installed. It
// returns once the aggregator reports both APIServices Available.
func (c *Cluster) StartMetricsAPIServer(ctx context.Context, opts MetricsAPIServerOptions) error {
	if !c.HasBin(MetricsAPIServer) {
		return fmt.Errorf("%s not found: run make build", c.Bin(MetricsAPIServer))
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultMetricsInterval
	}
	if err := c.ApplyConfig(ctx, MetricsAPIServerConfig...); err != nil {
		return err
	}
	kubeconfig, err := c.ServiceAccountKubeconfig(ctx, api.DefaultNamespace, certs.MetricsAPIServer.Service, "", "metrics-apiserver.kubeconfig", 48*time.Hour)
	if err != nil {
		return err
	}
	port, err := c.port(MetricsAPIServer)
	if err != nil {
		return err
	}
	agg, err := aggregator.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	if err := c.registerAPIServices(ctx, agg, int32(port)); err != nil {
		return err
	}
	certArgs := []string{"--cert-mode=self-signed", "--cert-dir=" + c.path("metrics-apiserver-certs")}
	if opts.CertDir != "" {
		certArgs = []string{"--cert-mode=cert-manager", "--cert-dir=" + opts.CertDir}
	}
	timeout := opts.Interval / 2
	comp := c.newComponent(MetricsAPIServer, MetricsAPIServer, append(append([]string{
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--kubeconfig=" + kubeconfig,
		"--namespace=" + api.DefaultNamespace,
		"--interval=" + opts.Interval.String(),
		"--scrape-timeout=" + timeout.String(),
	}, certArgs...), opts.Args...)...)
	// Its own /readyz first (the health paths need no credentials; the
	// probe skips verification, on loopback): the APIServices' condition
	// may still tell of an earlier instance.
	readyz := runner.HTTPProbe(fmt.Sprintf("https://127.0.0.1:%d/readyz", port), true)
	comp.ready = func(ctx context.Context) error {
		if err := readyz(ctx); err != nil {
			return err
		}
		return apiServicesAvailable(ctx, agg)
	}
	return c.run(ctx, comp)
}

// MetricsAPIServerAddr is the host:port the metrics API server listens on,
// empty before StartMetricsAPIServer.
func (c *Cluster) MetricsAPIServerAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.ports[MetricsAPIServer]
	if !ok {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// registerAPIServices applies the shipped APIServices, pointed at port, and
// their Service as an ExternalName for localhost.
func (c *Cluster) registerAPIServices(ctx context.Context, agg aggregator.Interface, port int32) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(root, shippedAPIServices))
	if err != nil {
		return err
	}
	defer f.Close()
	var svcs []*apiregistrationv1.APIService
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var s apiregistrationv1.APIService
		if err := dec.Decode(&s); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("%s: %w", shippedAPIServices, err)
		}
		if s.Spec.Service == nil {
			return fmt.Errorf("%s: APIService %s has no service", shippedAPIServices, s.Name)
		}
		svcs = append(svcs, &s)
	}
	if len(svcs) == 0 {
		return fmt.Errorf("%s holds no APIService", shippedAPIServices)
	}
	ref := svcs[0].Spec.Service
	svc := corev1apply.Service(ref.Name, ref.Namespace).WithSpec(corev1apply.ServiceSpec().
		WithType(corev1.ServiceTypeExternalName).WithExternalName("localhost"))
	if _, err := c.client.CoreV1().Services(ref.Namespace).Apply(ctx, svc, metav1.ApplyOptions{FieldManager: installFieldManager, Force: true}); err != nil {
		return fmt.Errorf("service %s/%s for the APIServices: %w", ref.Namespace, ref.Name, err)
	}
	for _, s := range svcs {
		s.Spec.Service.Port = &port
		// Server-side apply takes the object as YAML or JSON.
		s.TypeMeta = metav1.TypeMeta{APIVersion: apiregistrationv1.SchemeGroupVersion.String(), Kind: "APIService"}
		b, err := yaml.Marshal(s)
		if err != nil {
			return err
		}
		force := true
		if _, err := agg.ApiregistrationV1().APIServices().Patch(ctx, s.Name, "application/apply-patch+yaml", b,
			metav1.PatchOptions{FieldManager: installFieldManager, Force: &force}); err != nil {
			return fmt.Errorf("APIService %s: %w", s.Name, err)
		}
	}
	return nil
}

// apiServicesAvailable is nil once the aggregator reports every APIService
// of the custom metrics API Available.
func apiServicesAvailable(ctx context.Context, agg aggregator.Interface) error {
	list, err := agg.ApiregistrationV1().APIServices().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var missing []string
	for _, s := range list.Items {
		if s.Spec.Group != "custom.metrics.k8s.io" {
			continue
		}
		available := false
		for _, cond := range s.Status.Conditions {
			if cond.Type == apiregistrationv1.Available {
				available = cond.Status == apiregistrationv1.ConditionTrue
				if !available {
					missing = append(missing, fmt.Sprintf("%s: %s: %s", s.Name, cond.Reason, cond.Message))
				}
			}
		}
		if !available && len(s.Status.Conditions) == 0 {
			missing = append(missing, s.Name+": no conditions yet")
		}
	}
	if len(missing) > 0 {
		return errors.New("APIServices not available: " + strings.Join(missing, "; "))
	}
	return nil
}
