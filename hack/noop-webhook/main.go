// Command noop-webhook is the floor of the webhook benchmark: a
// controller-runtime admission webhook that allows every request unchanged,
// served exactly as bin/webhook serves /mutate-pods (a manager with its
// metrics and health servers, controller-runtime's TLS webhook server
// reloading --cert-dir, the same flags).
//
//	noop-webhook --kubeconfig FILE --cert-dir DIR --port 9443 --health-addr :8081 --metrics-addr :8080
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/kube"
)

func main() {
	var (
		host, certDir, healthAddr, metricsAddr, pprofAddr, kubeconfig string
		port                                                          int
	)
	// Its own flag set: controller-runtime registers --kubeconfig on the
	// global one.
	fs := flag.NewFlagSet("noop-webhook", flag.ExitOnError)
	fs.StringVar(&host, "host", "", "address to serve on (default all)")
	fs.IntVar(&port, "port", 9443, "HTTPS port")
	fs.StringVar(&certDir, "cert-dir", "", "directory with tls.crt and tls.key")
	fs.StringVar(&healthAddr, "health-addr", ":8081", "address of /healthz and /readyz")
	fs.StringVar(&metricsAddr, "metrics-addr", ":8080", "address of /metrics (0 disables)")
	fs.StringVar(&pprofAddr, "pprof-addr", "0", "address of Go's /debug/pprof/ handlers (0 disables), as bin/webhook's flag")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default in-cluster); the manager needs one, nothing is read")
	_ = fs.Parse(os.Args[1:])

	log := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(os.Stderr)))
	ctrl.SetLogger(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, host, port, certDir, healthAddr, metricsAddr, pprofAddr, kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, host string, port int, certDir, healthAddr, metricsAddr, pprofAddr, kubeconfig string) error {
	cfg, err := kube.RESTConfig(kubeconfig)
	if err != nil {
		return err
	}
	mgr, err := manager.New(cfg, manager.Options{
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: healthAddr,
		PprofBindAddress:       pprofAddr,
		WebhookServer:          crwebhook.NewServer(crwebhook.Options{Host: host, Port: port, CertDir: certDir}),
	})
	if err != nil {
		return err
	}
	// GetWebhookServer, as bin/webhook does: it is what adds the server to
	// the manager's runnables.
	server := mgr.GetWebhookServer()
	allow := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})
	server.Register(api.WebhookPath, &admission.Webhook{Handler: allow})
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", server.StartedChecker()); err != nil {
		return err
	}
	return mgr.Start(ctx)
}
