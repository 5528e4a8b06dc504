// Command metrics-apiserver serves the GPU figures of mlplane's node agents
// (per pod: GPU memory used and booked, GPU utilisation) through the
// Kubernetes custom metrics API, custom.metrics.k8s.io, as an aggregated
// API server, so that a HorizontalPodAutoscaler scales on them without
// Prometheus:
//
//	metrics-apiserver [--interval 15s] [--cert-dir DIR] [--cert-mode cert-manager|self-signed] ...
//
// The name says what it is to a cluster admin: an API server, like
// metrics-server, not an exporter. The logic lives in
// internal/custommetrics; see docs/autoscaling.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"

	"github.com/mlplane/mlplane/internal/custommetrics"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
		}
		os.Exit(1)
	}
}

// run parses args into custommetrics.Options and serves until SIGTERM or
// SIGINT.
func run(args []string, stderr io.Writer) error {
	fs := pflag.NewFlagSet("metrics-apiserver", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	o := custommetrics.NewOptions()
	o.AddFlags(fs)
	verbosity := fs.IntP("v", "v", 0, "log verbosity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(*verbosity), textlogger.Output(stderr)))
	// The generic API server logs through klog.
	klog.SetLogger(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return custommetrics.Run(ctx, o, log) // validates o first
}
