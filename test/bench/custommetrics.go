package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mlplane/mlplane/internal/cluster/runner"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/custommetrics"
)

// CustomMetricsOptions configure CustomMetricsBench.
type CustomMetricsOptions struct {
	// Nodes and PodsPerNode: the GPU pods the server has figures for.
	// Defaults 125 and 8 (1,000 pods).
	Nodes, PodsPerNode int
	// Interval is the server's --interval. Default 15s, as installed.
	Interval time.Duration
	// Window is the measured time of the footprint, with no query. Default 60s.
	Window time.Duration
	// Requests is how many requests each latency series sends, one at a
	// time. Default 300.
	Requests int
	// Logf receives progress lines. Default: discarded.
	Logf func(format string, args ...any)
}

// Latency is a series of requests' latencies, in milliseconds.
type Latency struct {
	Requests int     `json:"requests"`
	Items    int     `json:"items"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
}

// CustomMetricsReport is the custom metrics API server under 1,000 pods.
type CustomMetricsReport struct {
	Machine  Machine `json:"machine"`
	Nodes    int     `json:"nodes"`
	Pods     int     `json:"pods"`
	Interval string  `json:"interval"`
	// Agents says what the server scraped.
	Agents string `json:"agents"`
	// AgentBytes is one stand-in agent's /metrics, in bytes.
	AgentBytes int `json:"agent_bytes"`
	// Footprint, idle but for the scrapes: VmRSS at the end and the most
	// sampled, CPU over the window.
	Window     string  `json:"window"`
	RSSMiB     float64 `json:"rss_mib"`
	MaxRSSMiB  float64 `json:"max_rss_mib"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPercent float64 `json:"cpu_percent"`
	// RSSAnonMiB and RSSFileMiB split RSSMiB: the process's own memory
	// (heap, stacks) and the pages of files it maps (its binary).
	RSSAnonMiB float64 `json:"rss_anon_mib"`
	RSSFileMiB float64 `json:"rss_file_mib"`
	// RoundSeconds is the server's last round of scrapes of every agent
	// (mlplane_custom_metrics_last_round_duration_seconds).
	RoundSeconds float64 `json:"round_seconds"`
	// Through kube-apiserver's aggregation: one pod by name, and the 1,000
	// pods by label selector (what an HPA asks); beside them, the API
	// server's own GET of one pod and LIST of the 1,000 by the same
	// selector (its watch cache), the baseline of the same run.
	OnePod          Latency `json:"one_pod"`
	AllPods         Latency `json:"all_pods"`
	BaselineGetPod  Latency `json:"baseline_get_pod"`
	BaselineListPod Latency `json:"baseline_list_pods"`
	// QueryCPUPercent is the server's CPU while the latency series ran.
	QueryCPUPercent float64 `json:"query_cpu_percent"`
}

const cmNamespace = "bench-custom-metrics"

// CustomMetricsBench measures the custom metrics API server on c: Nodes
// KWOK nodes whose agents are stand-ins in this process (one HTTP server
// per node serving, through client_golang, the agent's per-GPU and per-pod
// series for PodsPerNode pods, plus the Go and process collectors an
// agent serves), PodsPerNode pods on each (bound by nodeName, Running by
// KWOK), bin/metrics-apiserver started as the local cluster runs it. It
// measures the server's RSS and CPU with no query, then the latency of its
// API through kube-apiserver.
func CustomMetricsBench(ctx context.Context, c *cluster.Cluster, o CustomMetricsOptions) (*CustomMetricsReport, error) {
	if o.Nodes <= 0 {
		o.Nodes = 125
	}
	if o.PodsPerNode <= 0 {
		o.PodsPerNode = 8
	}
	if o.Interval <= 0 {
		o.Interval = custommetrics.DefaultInterval
	}
	if o.Window <= 0 {
		o.Window = 60 * time.Second
	}
	if o.Requests <= 0 {
		o.Requests = 300
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if !c.HasBin(cluster.MetricsAPIServer) {
		return nil, fmt.Errorf("%s not found: run make build", c.Bin(cluster.MetricsAPIServer))
	}
	cs := c.Client()
	rep := &CustomMetricsReport{Machine: ThisMachine(), Nodes: o.Nodes, Pods: o.Nodes * o.PodsPerNode, Interval: o.Interval.String(),
		Agents: "stand-ins in the benchmark process: an HTTP server per node serving the node agent's families (8 GPUs, the pods' memory used and booked and utilisation) and the Go and process collectors, with client_golang"}

	o.Logf("custom metrics: %d KWOK nodes, %d pods", o.Nodes, rep.Pods)
	nodes, err := c.AddGPUNodes(ctx, fmt.Sprintf("%dx8x80Gi", o.Nodes), cluster.NodeOptions{Prefix: "cm-", Publisher: cluster.PublishInProcess})
	if err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cmNamespace}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	// Pods are refused until the namespace's default ServiceAccount exists.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(cmNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("namespace %s: no default ServiceAccount: %w", cmNamespace, err)
	}
	pods, err := createBoundPods(ctx, c, nodes, o.PodsPerNode)
	if err != nil {
		return nil, err
	}
	agents, err := startStandInAgents(ctx, c, nodes, pods)
	if err != nil {
		return nil, err
	}
	defer agents.close()
	rep.AgentBytes = agents.bytes

	if err := c.StartMetricsAPIServer(ctx, cluster.MetricsAPIServerOptions{Interval: o.Interval}); err != nil {
		return nil, err
	}
	rc := cs.Discovery().RESTClient()
	allPath := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + cmNamespace + "/pods/*/" + custommetrics.MetricUtilization
	selector := "app=bench-llm"
	o.Logf("custom metrics: waiting until the API serves all %d pods", rep.Pods)
	deadline := time.Now().Add(3*o.Interval + time.Minute)
	for {
		b, err := rc.Get().AbsPath(allPath).Param("labelSelector", selector).DoRaw(ctx)
		if err == nil && strings.Count(string(b), `"describedObject"`) == rep.Pods {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the API did not serve %d pods within %s: %v", rep.Pods, 3*o.Interval+time.Minute, err)
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, err
		}
	}

	pid := c.PID(cluster.MetricsAPIServer)
	o.Logf("custom metrics: footprint over %s, no query", o.Window)
	fp, err := sampleUsage(ctx, pid, o.Window)
	if err != nil {
		return nil, err
	}
	rep.Window = fp.elapsed.Round(time.Second).String()
	rep.RSSMiB, rep.MaxRSSMiB = mib(fp.last.RSSBytes), mib(fp.maxRSS)
	rep.RSSAnonMiB, rep.RSSFileMiB = mib(fp.last.AnonBytes), mib(fp.last.FileBytes)
	rep.CPUSeconds = fp.cpu.Seconds()
	rep.CPUPercent = 100 * rep.CPUSeconds / fp.elapsed.Seconds()
	if rep.RoundSeconds, err = serverRound(ctx, c); err != nil {
		return nil, err
	}

	o.Logf("custom metrics: %d requests per series, one at a time", o.Requests)
	qBefore, _ := runner.ReadUsage(pid)
	qStart := time.Now()
	one := func(i int) (int, error) {
		b, err := rc.Get().AbsPath("/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + cmNamespace + "/pods/" + pods[i%len(pods)].Name + "/" + custommetrics.MetricUtilization).DoRaw(ctx)
		return strings.Count(string(b), `"describedObject"`), err
	}
	all := func(int) (int, error) {
		b, err := rc.Get().AbsPath(allPath).Param("labelSelector", selector).DoRaw(ctx)
		return strings.Count(string(b), `"describedObject"`), err
	}
	getPod := func(i int) (int, error) {
		_, err := rc.Get().AbsPath("/api/v1/namespaces/" + cmNamespace + "/pods/" + pods[i%len(pods)].Name).DoRaw(ctx)
		return 1, err
	}
	listPods := func(int) (int, error) {
		b, err := rc.Get().AbsPath("/api/v1/namespaces/"+cmNamespace+"/pods").Param("labelSelector", selector).DoRaw(ctx)
		return strings.Count(string(b), `"uid":`), err
	}
	// Interleaved, so that a busy moment of the shared machine falls on
	// every series alike.
	series := []func(int) (int, error){one, getPod, all, listPods}
	lat := make([][]time.Duration, len(series))
	items := make([]int, len(series))
	for i := range o.Requests {
		for k, f := range series {
			t0 := time.Now()
			n, err := f(i)
			if err != nil {
				return nil, fmt.Errorf("request %d of series %d: %w", i, k, err)
			}
			lat[k] = append(lat[k], time.Since(t0))
			items[k] = n
		}
	}
	qAfter, _ := runner.ReadUsage(pid)
	rep.QueryCPUPercent = 100 * (qAfter.CPU - qBefore.CPU).Seconds() / time.Since(qStart).Seconds()
	rep.OnePod, rep.BaselineGetPod = latency(lat[0], items[0]), latency(lat[1], items[1])
	rep.AllPods, rep.BaselineListPod = latency(lat[2], items[2]), latency(lat[3], items[3])
	if rep.AllPods.Items != rep.Pods || rep.OnePod.Items != 1 {
		return rep, fmt.Errorf("the API answered %d items for the selector and %d by name, want %d and 1", rep.AllPods.Items, rep.OnePod.Items, rep.Pods)
	}
	return rep, nil
}

func latency(d []time.Duration, items int) Latency {
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(q float64) float64 {
		i := int(q * float64(len(s)-1))
		return float64(s[i].Microseconds()) / 1000
	}
	return Latency{Requests: len(s), Items: items, P50: ms(0.50), P99: ms(0.99), Max: ms(1)}
}

// createBoundPods creates perNode pods on each node, bound by nodeName
// (KWOK runs them), 32 at a time, and returns them in node order.
func createBoundPods(ctx context.Context, c *cluster.Cluster, nodes []string, perNode int) ([]corev1.Pod, error) {
	cs := c.Client()
	out := make([]corev1.Pod, len(nodes)*perNode)
	errs := make([]error, len(out))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			zero := int64(0)
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("llm-%04d", i), Namespace: cmNamespace, Labels: map[string]string{"app": "bench-llm"}},
				Spec: corev1.PodSpec{NodeName: nodes[i/perNode], TerminationGracePeriodSeconds: &zero,
					Containers: []corev1.Container{{Name: "server", Image: "registry.example/vllm:bench"}}},
			}
			got, err := cs.CoreV1().Pods(cmNamespace).Create(ctx, p, metav1.CreateOptions{})
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = *got
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// standIns are the stand-in node agents.
type standIns struct {
	servers []*http.Server
	// bytes is the size of one agent's /metrics.
	bytes int
}

func (s *standIns) close() {
	for _, srv := range s.servers {
		_ = srv.Close()
	}
}

// startStandInAgents serves, for each node, the node agent's exposition of
// its 8 GPUs and of its pods (pods is in node order, len(pods)/len(nodes)
// a node), each on GPU index%8, and publishes the address on the Node as
// the agent does.
func startStandInAgents(ctx context.Context, c *cluster.Cluster, nodes []string, pods []corev1.Pod) (*standIns, error) {
	perNode := len(pods) / len(nodes)
	s := &standIns{}
	for n, node := range nodes {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		gpuLabels := []string{"node", "gpu", "uuid", "model"}
		podLabels := []string{"node", "namespace", "pod", "pod_uid", "gpu", "uuid"}
		total := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mlplane_gpu_memory_total_bytes", Help: "Total memory of the GPU."}, gpuLabels)
		used := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mlplane_gpu_memory_used_bytes", Help: "Memory in use on the GPU."}, gpuLabels)
		util := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mlplane_gpu_utilization_ratio", Help: "GPU utilisation."}, gpuLabels)
		healthy := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mlplane_gpu_healthy", Help: "1 when healthy."}, append(gpuLabels, "reason"))
		podUsed := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: custommetrics.AgentMemoryUsed, Help: "GPU memory of a pod's processes."}, podLabels)
		podBooked := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: custommetrics.AgentMemoryBooked, Help: "GPU memory a pod booked."}, podLabels)
		podUtil := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: custommetrics.AgentUtilization, Help: "A pod's share of the GPU's time."}, append(podLabels, "source"))
		reg.MustRegister(total, used, util, healthy, podUsed, podBooked, podUtil)
		for g := range 8 {
			l := []string{node, strconv.Itoa(g), cluster.FakeUUID(node, g), "Fake GPU 80Gi"}
			total.WithLabelValues(l...).Set(80 << 30)
			used.WithLabelValues(l...).Set(20 << 30)
			util.WithLabelValues(l...).Set(0.5)
			healthy.WithLabelValues(append(l, "")...).Set(1)
		}
		for i := range perNode {
			p := pods[n*perNode+i]
			g := strconv.Itoa(i % 8)
			l := []string{node, p.Namespace, p.Name, string(p.UID), g, cluster.FakeUUID(node, i%8)}
			podUsed.WithLabelValues(l...).Set(12 << 30)
			podBooked.WithLabelValues(l...).Set(20 << 30)
			podUtil.WithLabelValues(append(l, "process")...).Set(0.5)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.close()
			return nil, err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		s.servers = append(s.servers, srv)
		go func() { _ = srv.Serve(ln) }()
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, api.NodeAnnotationAgentMetrics, ln.Addr().String())
		if _, err := c.Client().CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			s.close()
			return nil, err
		}
		if n == 0 {
			resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
			if err != nil {
				s.close()
				return nil, err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			s.bytes = len(b)
		}
	}
	return s, nil
}

// serverRound reads mlplane_custom_metrics_last_round_duration_seconds from
// the server's own /metrics, as the cluster's admin (its client
// certificate; the server delegates authorisation to kube-apiserver).
func serverRound(ctx context.Context, c *cluster.Cluster) (float64, error) {
	cfg := c.RESTConfig()
	cfg.Host = "https://" + c.MetricsAPIServerAddr()
	cfg.TLSClientConfig = rest.TLSClientConfig{CertData: cfg.CertData, KeyData: cfg.KeyData, Insecure: true}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/metrics", nil)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s/metrics: %s: %s", cfg.Host, resp.Status, b)
	}
	const name = "mlplane_custom_metrics_last_round_duration_seconds"
	v, err := ParseCounters(bytes.NewReader(b), name)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("the server's /metrics has no %s", name)
	}
	return v[""], nil
}

// WriteText writes the figures.
func (r *CustomMetricsReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %d CPUs, %s, %s, load average at start %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.LoadAverage)
	fmt.Fprintf(&b, "custom metrics API server: %d pods on %d nodes, --interval %s; agents: %s (%d bytes each)\n", r.Pods, r.Nodes, r.Interval, r.Agents, r.AgentBytes)
	fmt.Fprintf(&b, "footprint, no query, over %s: RSS %.1f MiB (max %.1f; anonymous %.1f, file %.1f), CPU %.2f s = %.2f%% of one core; last round of %d scrapes %.3f s\n",
		r.Window, r.RSSMiB, r.MaxRSSMiB, r.RSSAnonMiB, r.RSSFileMiB, r.CPUSeconds, r.CPUPercent, r.Nodes, r.RoundSeconds)
	fmt.Fprintf(&b, "through kube-apiserver, one request at a time (p50 / p99 / max ms):\n")
	for _, l := range []struct {
		name string
		l    Latency
	}{
		{"gpu_utilization of one pod, by name", r.OnePod},
		{"  baseline: GET that pod", r.BaselineGetPod},
		{fmt.Sprintf("gpu_utilization of %d pods, label selector", r.Pods), r.AllPods},
		{fmt.Sprintf("  baseline: LIST those %d pods", r.Pods), r.BaselineListPod},
	} {
		fmt.Fprintf(&b, "  %-48s %7.2f / %7.2f / %7.2f  (%d requests, %d items)\n", l.name, l.l.P50, l.l.P99, l.l.Max, l.l.Requests, l.l.Items)
	}
	fmt.Fprintf(&b, "server CPU while those ran: %.1f%% of one core\n", r.QueryCPUPercent)
	_, err := io.WriteString(w, b.String())
	return err
}
