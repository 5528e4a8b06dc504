// Command loadgen sends AdmissionReviews for a typical vLLM pod to a webhook
// over TLS with keep-alive, from N closed-loop clients, and reports
// requests/s, latency quantiles and errors (see test/bench.RunLoad).
//
//	loadgen --url https://127.0.0.1:9443/mutate-pods [--ca ca.crt] [--clients 8] [--duration 10s] [--containers 1] [--output text|json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mlplane/mlplane/test/bench"
)

func main() {
	var (
		o          bench.LoadOptions
		caFile     string
		namespace  string
		containers int
		output     string
	)
	flag.StringVar(&o.URL, "url", "https://127.0.0.1:9443/mutate-pods", "the webhook's admission URL")
	flag.StringVar(&caFile, "ca", "", "CA certificate (PEM) that signed the webhook's; empty: no verification")
	flag.IntVar(&o.Clients, "clients", 1, "concurrent closed-loop clients")
	flag.DurationVar(&o.Duration, "duration", 0, "measured time (default 10s)")
	flag.DurationVar(&o.Warmup, "warmup", 0, "unmeasured time first (default 1s)")
	flag.BoolVar(&o.HTTP1, "http1", false, "HTTP/1.1 with a connection per client instead of HTTP/2 (the API server's choice)")
	flag.IntVar(&o.Conns, "conns", 1, "HTTP/2 connections shared by the clients")
	flag.BoolVar(&o.ExpectPatch, "expect-patch", false, "count an answer without a JSON patch as an error")
	flag.StringVar(&namespace, "namespace", bench.BenchNamespace, "the pod's namespace (opt it in for the mlplane webhook)")
	flag.IntVar(&containers, "containers", 1, "containers in the pod: the vLLM server plus sidecars")
	flag.StringVar(&output, "output", "text", "text or json")
	flag.Parse()

	if err := run(o, caFile, namespace, containers, output); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(o bench.LoadOptions, caFile, namespace string, containers int, output string) error {
	if output != "text" && output != "json" {
		return fmt.Errorf("--output %q: want text or json", output)
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		o.CAPEM = b
	}
	body, err := bench.AdmissionReview(bench.VLLMPod(namespace, containers))
	if err != nil {
		return err
	}
	o.Body = body
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunLoad(ctx, o)
	if err != nil {
		return err
	}
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Println(res)
	return nil
}
