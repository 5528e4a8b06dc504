package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
)

// AdmissionGoal is the issue 14 goal for the API server's own measure of
// the webhook, apiserver_admission_webhook_admission_duration_seconds: p99
// at most 5 ms, which is also that histogram's first bucket bound.
const AdmissionGoal = 5 * time.Millisecond

// AdmissionBenchOptions configure AdmissionBench.
type AdmissionBenchOptions struct {
	// Rate is how many pods are created per second, on a fixed schedule
	// (open loop: a slow answer does not delay the next create). Default 150.
	Rate float64
	// Duration of each run. Default 30s.
	Duration time.Duration
	// Rounds: each round is one run with the webhook registered and one
	// without, their order alternating. Default 2.
	Rounds int
	// Workers bound the creates in flight. Default 64.
	Workers int
	// Containers in the vLLM pod (VLLMPod). Default 1.
	Containers int
	// Logf receives progress lines. Default: discarded.
	Logf func(format string, args ...any)
}

func (o *AdmissionBenchOptions) setDefaults() {
	if o.Rate <= 0 {
		o.Rate = 150
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.Rounds < 1 {
		o.Rounds = 2
	}
	if o.Workers < 1 {
		o.Workers = 64
	}
	if o.Containers < 1 {
		o.Containers = 1
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// AdmissionRun is one run: pods created at the rate for the duration, with
// or without the webhook. Latencies are in milliseconds; the histograms'
// are interpolated within their buckets as histogram_quantile does.
type AdmissionRun struct {
	Webhook bool `json:"webhook"`
	// Pods answered (created or refused), Errors among them.
	Pods       int    `json:"pods"`
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Mutated counts the created pods that carry api.AnnotationStatus.
	Mutated int `json:"mutated"`
	// Rate is Pods over the time from the first create to the last answer.
	Rate float64 `json:"rate_per_s"`
	// MaxLagMs is how late a create started after its scheduled time, at
	// most: above a few ms, the load generator could not keep the rate.
	MaxLagMs float64 `json:"max_lag_ms"`
	// Create is the latency of each create as the client saw it, exact
	// quantiles of every request.
	Create LatencyQuantiles `json:"create"`
	// APIServer is apiserver_request_duration_seconds for POST pods.
	APIServer Quantiles `json:"apiserver_post_pods"`
	// AdmitStep is apiserver_admission_step_admission_duration_seconds
	// (type admit, operation CREATE): every mutating admission step.
	AdmitStep Quantiles `json:"admit_step"`
	// WebhookAdmission is apiserver_admission_webhook_admission_duration_seconds
	// for mlplane's webhooks (the API server's own measure of the call),
	// and WithinGoal the fraction of calls in its bucket le=0.005.
	WebhookAdmission Quantiles `json:"webhook_admission"`
	WithinGoal       float64   `json:"webhook_within_5ms"`
	// WebhookServer is mlplane_webhook_request_duration_seconds, the
	// webhook's own measure of its handler, and WebhookCalls its requests
	// (mlplane_webhook_requests_total) by result.
	WebhookServer Quantiles          `json:"webhook_server"`
	WebhookCalls  map[string]float64 `json:"webhook_calls,omitempty"`
	// CPUMsPerPod is each process's CPU time over the run per pod, by
	// component ("bench" is the load generator).
	CPUMsPerPod map[string]float64 `json:"cpu_ms_per_pod"`
}

// LatencyQuantiles are exact quantiles of a set of latencies, in ms.
type LatencyQuantiles struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// AdmissionReport is the result of AdmissionBench.
type AdmissionReport struct {
	Machine    Machine        `json:"machine"`
	Rate       float64        `json:"rate_per_s"`
	Duration   float64        `json:"duration_s"`
	Containers int            `json:"containers"`
	Runs       []AdmissionRun `json:"runs"`
}

// AdmissionBench measures what mlplane's webhook adds to pod creation, as
// the API server measures it: on the local cluster c, with bin/webhook
// started and registered (cluster.StartWebhook), it creates the vLLM pod
// (VLLMPod, schedulerName mlplane-scheduler, which nothing serves here, so
// no scheduler acts on either run) at Rate pods per second in a namespace
// opted in to injection, once with the MutatingWebhookConfiguration
// registered and once with it deleted, and reads the API server's
// histograms before and after each run. The pods are deleted after each
// run.
func AdmissionBench(ctx context.Context, c *cluster.Cluster, o AdmissionBenchOptions) (*AdmissionReport, error) {
	o.setDefaults()
	rep := &AdmissionReport{Machine: ThisMachine(), Rate: o.Rate, Duration: o.Duration.Seconds(), Containers: o.Containers}
	if c.WebhookAddr() == "" {
		o.Logf("starting the webhook")
		if err := c.StartWebhook(ctx, cluster.WebhookOptions{}); err != nil {
			return nil, err
		}
	}
	cfg := c.RESTConfig()
	// Protobuf, as the ReplicaSet controller creates pods; no client-side
	// throttling at the rates measured.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.QPS, cfg.Burst = 2000, 4000
	cfg.UserAgent = "mlplane-admissionbench"
	cfg.WarningHandler = rest.NoWarnings{} // the webhook warns of the model Secret on every pod
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: BenchNamespace,
		Labels: map[string]string{api.LabelInject: api.NamespaceInjectEnabled}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	mwcs := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	reg, err := mwcs.Get(ctx, cluster.WebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the webhook's registration: %w", err)
	}
	reg = &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: reg.Name, Labels: reg.Labels}, Webhooks: reg.Webhooks}
	names := make([]string, len(reg.Webhooks))
	for i, w := range reg.Webhooks {
		names[i] = w.Name
	}
	pod := VLLMPod(BenchNamespace, o.Containers)
	pod.Spec.SchedulerName = api.DefaultSchedulerName
	setWebhook := func(on bool) error {
		var err error
		if on {
			_, err = mwcs.Create(ctx, reg, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				err = nil
			}
		} else if err = mwcs.Delete(ctx, reg.Name, metav1.DeleteOptions{}); apierrors.IsNotFound(err) {
			err = nil
		}
		if err != nil {
			return err
		}
		// The API server sees a registration change through its informer:
		// wait until a dry-run create is mutated exactly when it should be.
		return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			out, err := cs.CoreV1().Pods(BenchNamespace).Create(ctx, pod.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				return false, nil
			}
			_, mutated := out.Annotations[api.AnnotationStatus]
			return mutated == on, nil
		})
	}

	for r := range o.Rounds {
		order := []bool{true, false}
		if r%2 == 1 {
			order = []bool{false, true}
		}
		for _, on := range order {
			if err := setWebhook(on); err != nil {
				return rep, fmt.Errorf("registering the webhook (%v): %w", on, err)
			}
			run, err := admissionRun(ctx, c, cs, o, pod, on, names)
			if err != nil {
				return rep, err
			}
			rep.Runs = append(rep.Runs, *run)
			o.Logf("round %d, webhook %v: %d pods at %.1f/s, create p99 %.1f ms, POST pods p99 %.1f ms, webhook admission p99 %.2f ms (%.1f%% within 5 ms), errors %d",
				r+1, on, run.Pods, run.Rate, run.Create.P99, run.APIServer.P99, run.WebhookAdmission.P99, 100*run.WithinGoal, run.Errors)
			if err := deleteAllPods(ctx, cs, BenchNamespace, 32); err != nil {
				return rep, err
			}
		}
	}
	return rep, setWebhook(true)
}

// admissionRun creates pods at o.Rate for o.Duration and reads what the
// API server, the webhook and /proc measured meanwhile.
func admissionRun(ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface, o AdmissionBenchOptions, pod *corev1.Pod, webhook bool, webhookNames []string) (*AdmissionRun, error) {
	before, err := scrapeAdmission(ctx, c, cs, webhookNames)
	if err != nil {
		return nil, err
	}
	cpu0 := componentCPU(c.Dir())
	run := &AdmissionRun{Webhook: webhook}
	var (
		mu    sync.Mutex
		lat   []time.Duration
		wg    sync.WaitGroup
		slots = make(chan struct{}, o.Workers)
	)
	n := int(o.Rate * o.Duration.Seconds())
	interval := time.Duration(float64(time.Second) / o.Rate)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		slots <- struct{}{}
		if lag := time.Since(due); float64(lag.Microseconds())/1000 > run.MaxLagMs {
			run.MaxLagMs = float64(lag.Microseconds()) / 1000
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			out, err := cs.CoreV1().Pods(BenchNamespace).Create(ctx, pod.DeepCopy(), metav1.CreateOptions{})
			d := time.Since(t0)
			<-slots
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, d)
			if err != nil {
				run.Errors++
				if run.FirstError == "" {
					run.FirstError = err.Error()
				}
				return
			}
			if _, ok := out.Annotations[api.AnnotationStatus]; ok {
				run.Mutated++
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1 := componentCPU(c.Dir())
	// The API server observes a request's duration as its handler returns,
	// just after the answer: let the last ones land.
	time.Sleep(time.Second)
	after, err := scrapeAdmission(ctx, c, cs, webhookNames)
	if err != nil {
		return nil, err
	}
	run.Pods = len(lat)
	run.Rate = float64(run.Pods) / elapsed.Seconds()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	run.Create = LatencyQuantiles{P50: ms(Percentile(lat, .5)), P90: ms(Percentile(lat, .9)), P99: ms(Percentile(lat, .99)), Max: ms(lat[len(lat)-1])}
	run.APIServer = quantilesOf(after.post.Sub(before.post))
	run.AdmitStep = quantilesOf(after.admit.Sub(before.admit))
	wh := after.webhook.Sub(before.webhook)
	run.WebhookAdmission = quantilesOf(wh)
	run.WithinGoal = fractionWithin(wh, AdmissionGoal.Seconds())
	run.WebhookServer = quantilesOf(after.server.Sub(before.server))
	for k, v := range after.calls {
		if d := v - before.calls[k]; d > 0 {
			if run.WebhookCalls == nil {
				run.WebhookCalls = map[string]float64{}
			}
			run.WebhookCalls[k] = d
		}
	}
	run.CPUMsPerPod = map[string]float64{}
	for k, v := range cpu1 {
		run.CPUMsPerPod[k] = 1000 * (v - cpu0[k]) / float64(run.Pods)
	}
	return run, nil
}

// admissionScrape is one reading of the histograms AdmissionBench reports.
type admissionScrape struct {
	post, admit, webhook, server Histogram
	calls                        map[string]float64
}

func scrapeAdmission(ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface, webhookNames []string) (admissionScrape, error) {
	var s admissionScrape
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return s, err
	}
	_, reqs, err := requestMetrics(raw)
	if err != nil {
		return s, err
	}
	s.post = reqs["POST pods"]
	steps, err := ParseHistograms(bytes.NewReader(raw), "apiserver_admission_step_admission_duration_seconds", "type", "operation")
	if err != nil {
		return s, err
	}
	s.admit = steps["admit CREATE"]
	hooks, err := ParseHistograms(bytes.NewReader(raw), "apiserver_admission_webhook_admission_duration_seconds", "name", "type", "operation")
	if err != nil {
		return s, err
	}
	for _, n := range webhookNames {
		s.webhook = s.webhook.Add(hooks[n+" admit CREATE"])
	}
	body, err := getMetrics(ctx, c.WebhookMetricsURL())
	if err != nil {
		return s, err
	}
	defer body.Close()
	if raw, err = io.ReadAll(body); err != nil {
		return s, err
	}
	server, err := ParseHistograms(bytes.NewReader(raw), "mlplane_webhook_request_duration_seconds")
	if err != nil {
		return s, err
	}
	s.server = server[""]
	s.calls, err = ParseCounters(bytes.NewReader(raw), "mlplane_webhook_requests_total", "result")
	return s, err
}

// Add is the sum of two scrapes of histograms with the same buckets (or
// of h and an empty one).
func (h Histogram) Add(o Histogram) Histogram {
	if len(h.Bounds) == 0 {
		return o
	}
	out := Histogram{Bounds: h.Bounds, Counts: slices.Clone(h.Counts), Sum: h.Sum + o.Sum, Count: h.Count + o.Count}
	if len(o.Counts) == len(h.Counts) {
		for i := range out.Counts {
			out.Counts[i] += o.Counts[i]
		}
	}
	return out
}

// fractionWithin is the fraction of h's observations at most bound, which
// must be one of its bucket bounds (0 when it is not, or h is empty).
func fractionWithin(h Histogram, bound float64) float64 {
	i := slices.Index(h.Bounds, bound)
	if i < 0 || h.Count <= 0 {
		return 0
	}
	return h.Counts[i] / h.Count
}

// WriteText writes the runs as a table.
func (r *AdmissionReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %d CPUs, %s, %s, load average at start %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.LoadAverage)
	fmt.Fprintf(&b, "pods created at %.0f/s for %.0f s per run (vLLM pod, %d container(s)); latencies in ms\n\n", r.Rate, r.Duration, r.Containers)
	b.WriteString("webhook | pods | mutated | errors | rate/s | max lag | create p50 / p99 / max (client) | POST pods p50 / p99 | admit step p99 | webhook admission p50 / p99, within 5 ms | webhook handler p50 / p99 | CPU ms per pod: apiserver, etcd, webhook\n")
	for _, run := range r.Runs {
		on := "without"
		if run.Webhook {
			on = "with"
		}
		fmt.Fprintf(&b, "%-7s | %4d | %7d | %6d | %6.1f | %7.1f | %6.1f / %6.1f / %6.1f | %6.1f / %6.1f | %6.2f | %5.2f / %5.2f, %5.1f%% | %5.2f / %5.2f | %5.2f, %5.2f, %5.2f\n",
			on, run.Pods, run.Mutated, run.Errors, run.Rate, run.MaxLagMs, run.Create.P50, run.Create.P99, run.Create.Max,
			run.APIServer.P50, run.APIServer.P99, run.AdmitStep.P99,
			run.WebhookAdmission.P50, run.WebhookAdmission.P99, 100*run.WithinGoal, run.WebhookServer.P50, run.WebhookServer.P99,
			run.CPUMsPerPod["kube-apiserver"], run.CPUMsPerPod["etcd"], run.CPUMsPerPod["webhook"])
	}
	for _, run := range r.Runs {
		if len(run.WebhookCalls) > 0 {
			fmt.Fprintf(&b, "webhook calls (webhook %v), by result:", run.Webhook)
			for _, k := range slices.Sorted(maps.Keys(run.WebhookCalls)) {
				fmt.Fprintf(&b, " %s %.0f", k, run.WebhookCalls[k])
			}
			b.WriteByte('\n')
		}
		if run.FirstError != "" {
			fmt.Fprintf(&b, "first error (webhook %v): %s\n", run.Webhook, run.FirstError)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
