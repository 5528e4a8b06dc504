package custommetrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/metadata/metadatalister"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
)

// DefaultSecurePort is the HTTPS port: above 1024, for a non-root
// container (the APIServices reach it through the Service's port 443).
const DefaultSecurePort = 6443

// Options configures the custom metrics API server. NewOptions sets the
// defaults; AddFlags binds them to flags.
type Options struct {
	// Interval is the time between two rounds of scrapes of the node
	// agents. Default DefaultInterval.
	Interval time.Duration
	// ScrapeTimeout bounds one agent's scrape; less than Interval.
	// Default DefaultScrapeTimeout.
	ScrapeTimeout time.Duration
	// Kubeconfig is used to list Nodes and Pods and for delegated
	// authentication and authorization, unless their own flags
	// (--lister-kubeconfig, --authentication-kubeconfig,
	// --authorization-kubeconfig) say otherwise. Default in-cluster.
	Kubeconfig string
	// Namespace holds the self-signed mode's Secret and Lease and names
	// the Service of the serving certificate. Default api.DefaultNamespace.
	Namespace string
	// CertMode is certs.ModeCertManager (default) or certs.ModeSelfSigned.
	CertMode string
	// CertHosts are more DNS names or IPs for the self-signed serving
	// certificate.
	CertHosts []string
	// CertSyncInterval is how often the self-signed mode re-reads its
	// Secret and checks renewal. Default 30s.
	CertSyncInterval time.Duration

	// base holds the generic API server's options (secure serving,
	// delegated authentication and authorization, audit) and builds the
	// server.
	base *basecmd.AdapterBase
}

// NewOptions returns the defaults: --secure-port DefaultSecurePort, and
// --cert-dir naming a directory of tls.crt and tls.key, as the webhook's.
func NewOptions() *Options {
	srv := options.NewCustomMetricsAdapterServerOptions()
	srv.SecureServing.BindPort = DefaultSecurePort
	srv.SecureServing.ServerCert.CertDirectory = ""
	srv.SecureServing.ServerCert.PairName = "tls"
	return &Options{
		Interval:         DefaultInterval,
		ScrapeTimeout:    DefaultScrapeTimeout,
		Namespace:        api.DefaultNamespace,
		CertMode:         certs.ModeCertManager,
		CertSyncInterval: 30 * time.Second,
		base:             &basecmd.AdapterBase{Name: "mlplane-metrics-apiserver", CustomMetricsAdapterServerOptions: srv},
	}
}

// AddFlags binds o to fs: this server's flags and the generic API server's
// (--secure-port, --cert-dir, --tls-cert-file, --tls-private-key-file,
// --requestheader-*, --authentication-*, --authorization-*, --audit-*,
// --lister-kubeconfig, --client-qps, --client-burst).
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.base.FlagSet = fs
	o.base.InstallFlags()
	fs.DurationVar(&o.Interval, "interval", o.Interval, "time between two rounds of scrapes of every node agent's /metrics; figures older than twice this are not served")
	fs.DurationVar(&o.ScrapeTimeout, "scrape-timeout", o.ScrapeTimeout, "how long one node agent's scrape may take; less than --interval")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig for listing Nodes and Pods and for delegated authentication and authorization (default in-cluster)")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of the self-signed mode's Secret and Lease, and of the Service the certificate names")
	fs.StringVar(&o.CertMode, "cert-mode", o.CertMode, "where the serving certificate comes from: cert-manager (tls.crt and tls.key in --cert-dir, as cert-manager's Secret mounts them) or self-signed (the server is its own CA and patches the APIServices' caBundle)")
	fs.StringSliceVar(&o.CertHosts, "cert-hosts", o.CertHosts, "self-signed mode: extra DNS names or IPs for the serving certificate, comma-separated")
	fs.DurationVar(&o.CertSyncInterval, "cert-sync-interval", o.CertSyncInterval, "self-signed mode: how often the Secret is re-read and renewal checked")
}

// Validate returns every problem of o at once.
func (o *Options) Validate() error {
	var errs []error
	if o.Interval <= 0 {
		errs = append(errs, fmt.Errorf("--interval %s: want a positive duration", o.Interval))
	}
	if o.ScrapeTimeout <= 0 || (o.Interval > 0 && o.ScrapeTimeout >= o.Interval) {
		errs = append(errs, fmt.Errorf("--scrape-timeout %s: want a positive duration less than --interval %s", o.ScrapeTimeout, o.Interval))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace is empty"))
	}
	serving := o.base.SecureServing
	certDir := serving.ServerCert.CertDirectory
	files := serving.ServerCert.CertKey.CertFile != "" || serving.ServerCert.CertKey.KeyFile != ""
	switch o.CertMode {
	case certs.ModeCertManager:
		if certDir == "" && !files {
			errs = append(errs, fmt.Errorf("--cert-mode %s needs --cert-dir (where cert-manager's Secret is mounted) or --tls-cert-file and --tls-private-key-file", certs.ModeCertManager))
		}
	case certs.ModeSelfSigned:
		if certDir == "" || files {
			errs = append(errs, fmt.Errorf("--cert-mode %s needs --cert-dir, where it writes tls.crt and tls.key, and no --tls-cert-file or --tls-private-key-file", certs.ModeSelfSigned))
		}
	default:
		errs = append(errs, certs.ValidateMode(o.CertMode))
	}
	for _, err := range o.base.CustomMetricsAdapterServerOptions.Validate() {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

var (
	podsGVR  = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	nodesGVR = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
)

// Run serves the custom metrics API until ctx ends: it gets its serving
// certificate (self-signed mode: issues it and waits until it is written),
// starts the Pod and Node informers and the Collector, and runs the
// aggregated API server, ready once the informers have synced and one
// round of scrapes is done.
func Run(ctx context.Context, o *Options, log logr.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	b := o.base
	if o.Kubeconfig != "" {
		if b.RemoteKubeConfigFile == "" {
			b.RemoteKubeConfigFile = o.Kubeconfig
		}
		if b.Authentication.RemoteKubeConfigFile == "" {
			b.Authentication.RemoteKubeConfigFile = o.Kubeconfig
		}
		if b.Authorization.RemoteKubeConfigFile == "" {
			b.Authorization.RemoteKubeConfigFile = o.Kubeconfig
		}
	}
	cfg, err := b.ClientConfig()
	if err != nil {
		return err
	}
	if err := o.certificates(ctx, cfg, log); err != nil {
		return err
	}

	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	pods := metadataInformer(meta, podsGVR, slimPod)
	nodes := metadataInformer(meta, nodesGVR, slimNode)
	go pods.Run(ctx.Done())
	go nodes.Run(ctx.Done())
	log.Info("waiting for the Pod and Node informers")
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, nodes.HasSynced) {
		return fmt.Errorf("pod and node informers did not sync: %w", context.Cause(ctx))
	}

	store := NewStore()
	collector := NewCollector(CollectorOptions{
		Targets:  NodeTargets(metadatalister.New(nodes.GetIndexer(), nodesGVR), api.NodeAnnotationAgentMetrics, log.WithName("targets")),
		Store:    store,
		Interval: o.Interval,
		Timeout:  o.ScrapeTimeout,
		Logger:   log.WithName("collector"),
	})
	go collector.Run(ctx)

	b.WithCustomMetrics(NewProvider(store, metadatalister.New(pods.GetIndexer(), podsGVR), MaxAge(o.Interval)))
	if err := registerMetrics(); err != nil {
		return err
	}
	server, err := b.Server()
	if err != nil {
		return err
	}
	if err := server.GenericAPIServer.AddReadyzChecks(healthz.NamedCheck("gpu-metrics-collected", func(*http.Request) error {
		if collector.Rounds() == 0 {
			return errors.New("no round of node agent scrapes has completed yet")
		}
		return nil
	})); err != nil {
		return err
	}
	log.Info("serving the custom metrics API", "port", b.SecureServing.BindPort, "interval", o.Interval, "metrics", Metrics)
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// certificates, in self-signed mode, starts the certificate keeper and
// returns once --cert-dir holds a serving certificate; in cert-manager mode
// it checks that the files are there (the generic server would otherwise
// make an unrelated self-signed certificate of its own).
func (o *Options) certificates(ctx context.Context, cfg *rest.Config, log logr.Logger) error {
	dir := o.base.SecureServing.ServerCert.CertDirectory
	if o.CertMode == certs.ModeCertManager {
		if dir == "" {
			return nil // --tls-cert-file and --tls-private-key-file
		}
		for _, f := range []string{certs.KeyCert, certs.KeyKey} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return fmt.Errorf("--cert-mode %s: %w (mount cert-manager's Secret %s at --cert-dir)", certs.ModeCertManager, err, certs.MetricsAPIServer.Secret)
			}
		}
		return nil
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	agg, err := aggregator.NewForConfig(cfg)
	if err != nil {
		return err
	}
	keeper, err := certs.NewSelfSigned(certs.SelfSignedOptions{
		Client:       client,
		CertDir:      dir,
		Namespace:    o.Namespace,
		Server:       certs.MetricsAPIServer,
		ExtraHosts:   o.CertHosts,
		CABundle:     APIServiceBundle{Client: agg, Names: APIServiceNames},
		SyncInterval: o.CertSyncInterval,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	return keeper.Start(ctx)
}

// metadataInformer watches the metadata of every object of gvr, keeping
// what transform leaves of each, indexed by namespace.
func metadataInformer(client metadata.Interface, gvr schema.GroupVersionResource, transform cache.TransformFunc) cache.SharedIndexInformer {
	inf := metadatainformer.NewFilteredMetadataInformer(client, gvr, metav1.NamespaceAll, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, nil).Informer()
	if err := inf.SetTransform(transform); err != nil {
		panic(err) // only fails once started
	}
	return inf
}

// slimPod keeps of a pod what the Provider reads: name, namespace, UID and
// labels (for the HPA's selector).
func slimPod(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil // a tombstone
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion, Labels: m.Labels,
	}}, nil
}

// slimNode keeps of a node its name and the agent's metrics address.
func slimNode(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	out := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion,
	}}
	if v, ok := m.Annotations[api.NodeAnnotationAgentMetrics]; ok {
		out.Annotations = map[string]string{api.NodeAnnotationAgentMetrics: v}
	}
	return out, nil
}
