// Command webhook is mlplane's mutating admission webhook for ML pods.
//
//	webhook [serve] [--port 9443] [--cert-dir DIR] [--config FILE] ...
//	webhook inject -f FILE|- [--config FILE] [--namespace-labels k=v,...]
//
// See docs/webhook.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
	"github.com/mlplane/mlplane/internal/webhook"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "inject") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("webhook "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if cmd == "inject" {
		var o webhook.InjectOptions
		fs.StringVar(&o.File, "f", "", "multi-document YAML to mutate, - for standard input")
		fs.StringVar(&o.ConfigFile, "config", "", "InjectionConfig file (default: the built-in config)")
		fs.StringVar(&o.NamespaceLabels, "namespace-labels", "", "labels of the objects' namespaces, k=v,k2=v2")
		fs.StringVar(&o.Namespace, "namespace", api.DefaultNamespace, "the webhook's own namespace, never mutated")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return webhook.Inject(o, stdin, stdout, stderr)
	}

	var o webhook.Options
	var verbosity int
	fs.StringVar(&o.Host, "host", "", "address to serve the webhook on (default all)")
	fs.IntVar(&o.Port, "port", 9443, "HTTPS port of the webhook")
	fs.StringVar(&o.CertDir, "cert-dir", "", "directory with tls.crt and tls.key, reloaded on change")
	fs.StringVar(&o.HealthAddr, "health-addr", ":8081", "address of /healthz and /readyz")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":8080", "address of /metrics (0 disables)")
	fs.StringVar(&o.PprofAddr, "pprof-addr", "0", "address of Go's /debug/pprof/ handlers (0 disables)")
	fs.StringVar(&o.ConfigFile, "config", "", "InjectionConfig file, reloaded on change (default: the built-in config)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig to read namespace labels with (default in-cluster)")
	fs.StringVar(&o.Namespace, "namespace", api.DefaultNamespace, "the webhook's own namespace, never mutated")
	fs.StringVar(&o.Cert.Mode, "cert-mode", certs.ModeCertManager, "where the serving certificate comes from: cert-manager (files in --cert-dir, as cert-manager's Secret mounts them) or self-signed (the webhook is its own CA)")
	fs.StringVar(&o.Cert.WebhookConfigurationName, "webhook-config-name", certs.WebhookConfigurationName, "self-signed mode: the MutatingWebhookConfiguration whose caBundle it keeps")
	fs.Func("cert-hosts", "self-signed mode: extra DNS names or IPs for the serving certificate, comma-separated", func(s string) error {
		o.Cert.ExtraHosts = append(o.Cert.ExtraHosts, strings.Split(s, ",")...)
		return nil
	})
	fs.DurationVar(&o.Cert.SyncInterval, "cert-sync-interval", 30*time.Second, "self-signed mode: how often the Secret is re-read and renewal checked")
	fs.IntVar(&verbosity, "v", 0, "log verbosity (2 logs every mutated pod)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(verbosity), textlogger.Output(stderr)))
	ctrl.SetLogger(log)
	// SIGTERM (the kubelet) or SIGINT start the graceful shutdown.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return webhook.Run(ctx, o, log)
}
