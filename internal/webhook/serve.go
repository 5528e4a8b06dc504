package webhook

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/mlplane/mlplane/internal/certs"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/kube"
)

// Path is where the API server sends pod AdmissionReviews.
const Path = api.WebhookPath

// Options configure the webhook server; the command line's flags fill them.
type Options struct {
	// Host is the address the webhook listens on. Default "" (all).
	Host string
	// Port is the webhook's HTTPS port. Default 9443.
	Port int
	// CertDir holds tls.crt and tls.key, reloaded when they change. Default
	// controller-runtime's ($TMPDIR/k8s-webhook-server/serving-certs).
	CertDir string
	// HealthAddr serves /healthz and /readyz. Default ":8081".
	HealthAddr string
	// MetricsAddr serves Prometheus /metrics. Default ":8080"; "0" disables.
	MetricsAddr string
	// PprofAddr serves Go's pprof handlers (controller-runtime's
	// PprofBindAddress). Default "" or "0": off.
	PprofAddr string
	// ConfigFile is the InjectionConfig; default "" (the built-in config).
	ConfigFile string
	// Kubeconfig is used to read namespace labels; default "" (in-cluster).
	Kubeconfig string
	// Namespace is the webhook's own namespace, never mutated. Default
	// api.DefaultNamespace.
	Namespace string
	// MaxBodyBytes bounds request bodies. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ShutdownTimeout bounds the graceful shutdown. Default 30s.
	ShutdownTimeout time.Duration
	// Cert says where the serving certificate comes from (certmode.go).
	Cert CertOptions
}

func (o *Options) setDefaults() {
	if o.Port == 0 {
		o.Port = 9443
	}
	if o.HealthAddr == "" {
		o.HealthAddr = ":8081"
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = ":8080"
	}
	if o.Namespace == "" {
		o.Namespace = api.DefaultNamespace
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.Cert.Mode == "" {
		o.Cert.Mode = certs.ModeCertManager
	}
}

// Run serves the webhook until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, o Options, log logr.Logger) error {
	o.setDefaults()
	if err := certs.ValidateMode(o.Cert.Mode); err != nil {
		return err
	}
	cfg, err := kube.RESTConfig(o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("connecting to the API server: %w", err)
	}
	if err := startCertificates(ctx, cfg, o, log); err != nil {
		return err
	}
	metrics := NewMetrics(crmetrics.Registry)
	configs, err := NewConfigSource(o.ConfigFile, o.Namespace, metrics, log.WithName("config"))
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := manager.New(cfg, manager.Options{
		Scheme:                  scheme,
		Logger:                  log,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.HealthAddr,
		PprofBindAddress:        o.PprofAddr,
		WebhookServer:           crwebhook.NewServer(crwebhook.Options{Host: o.Host, Port: o.Port, CertDir: o.CertDir}),
		GracefulShutdownTimeout: &o.ShutdownTimeout,
		Cache:                   cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	// Start the informers with the manager, not on the first request: the
	// namespaces' labels, LimitRanges and ResourceQuotas.
	for what, obj := range map[string]client.Object{"namespaces": namespaceMeta(), "LimitRanges": &corev1.LimitRange{}, "ResourceQuotas": &corev1.ResourceQuota{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("watching %s: %w", what, err)
		}
	}
	namespaces := &clusterNamespaces{cache: mgr.GetCache(), direct: mgr.GetAPIReader()}
	// GetWebhookServer, not server: it is what adds the server to the
	// manager's runnables.
	server := mgr.GetWebhookServer()
	server.Register(Path, NewHandler(configs, namespaces, HandlerOptions{
		MaxBodyBytes: o.MaxBodyBytes, Metrics: metrics, Log: log.WithName("admission"), Policies: namespaces,
	}))
	if err := mgr.Add(configs); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", server.StartedChecker()); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("namespaces", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return fmt.Errorf("namespace, LimitRange and ResourceQuota caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	log.Info("Starting mlplane webhook", "port", o.Port, "path", Path, "config", o.ConfigFile, "namespace", o.Namespace)
	return mgr.Start(ctx)
}
