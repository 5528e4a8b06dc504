package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// Scheduling modes.
const (
	// ModeExtender: pods for mlplane-scheduler, whose profile calls the
	// extender's filter, prioritize and bind.
	ModeExtender = "extender"
	// ModePlain: the same pods for the cluster's default-scheduler (the same
	// kube-scheduler binary and client limits), without the extender: plain
	// extended-resource scheduling of api.ResourceGPUMemory.
	ModePlain = "plain"
)

// SchedBenchOptions configure SchedBench.
type SchedBenchOptions struct {
	// BinDir holds the tools and bin/extender. Default cluster.DefaultBinDir().
	BinDir string
	// Dir keeps the cluster's files (logs) after the run. Default: a
	// temporary directory, removed.
	Dir string
	// Nodes and GPUs are the KWOK nodes: Nodes x GPUs (e.g. "8x80Gi").
	// Default 1000 and "8x80Gi".
	Nodes int
	GPUs  string
	// Pods per run. Default 5000.
	Pods int
	// Workers create the pods concurrently. Default 32.
	Workers int
	// ClientQPS of the creating client (burst twice that). Default 2000.
	ClientQPS float32
	// Modes run in this order, in the same cluster. Default extender, plain.
	Modes []string
	// Rounds repeats Modes (pods are deleted between runs). Default 1.
	Rounds int
	// PolicyFile is the extender's PlacementPolicy (--policy). Default: its
	// built-in policy.
	PolicyFile string
	// PercentageOfNodesToScore, when set, replaces the shipped scheduler
	// configuration's value for mlplane-scheduler (config/scheduler/
	// config.yaml sets 100; 0 is kube-scheduler's adaptive default).
	// Default: as shipped.
	PercentageOfNodesToScore *int
	// Backlog stops the mode's scheduler while the pods are created and
	// starts it once they all exist, as kube-scheduler's own perf suite
	// (scheduler_perf) measures: scheduling alone, the API server no longer
	// busy creating pods. PodsPerSecond is then timed from the scheduler's
	// start; BindRate from the first bind to the last.
	Backlog bool
	// ExtenderArgs are added to bin/extender's command line.
	ExtenderArgs []string
	// Timeout bounds each run. Default 15m.
	Timeout time.Duration
	// Logf receives progress lines. Default: discarded.
	Logf func(format string, args ...any)
}

func (o *SchedBenchOptions) setDefaults() error {
	if o.BinDir == "" {
		d, err := cluster.DefaultBinDir()
		if err != nil {
			return err
		}
		o.BinDir = d
	}
	if o.Nodes <= 0 {
		o.Nodes = 1000
	}
	if o.GPUs == "" {
		o.GPUs = "8x80Gi"
	}
	if o.Pods <= 0 {
		o.Pods = 5000
	}
	if o.Workers <= 0 {
		o.Workers = 32
	}
	if o.ClientQPS <= 0 {
		o.ClientQPS = 2000
	}
	if len(o.Modes) == 0 {
		o.Modes = []string{ModeExtender, ModePlain}
	}
	for _, m := range o.Modes {
		if m != ModeExtender && m != ModePlain {
			return fmt.Errorf("mode %q: want %s or %s", m, ModeExtender, ModePlain)
		}
	}
	if o.Rounds < 1 {
		o.Rounds = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Minute
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Quantiles summarise a latency histogram, in milliseconds.
type Quantiles struct {
	Count float64 `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
}

func quantilesOf(h Histogram) Quantiles {
	ms := func(s float64) float64 {
		if math.IsNaN(s) {
			return 0
		}
		return s * 1000
	}
	return Quantiles{Count: h.Count, Mean: ms(h.Mean()), P50: ms(h.Quantile(.5)), P90: ms(h.Quantile(.9)), P99: ms(h.Quantile(.99))}
}

// SchedRun is one run: Pods created from Workers goroutines, timed from the
// first create until every pod is bound.
type SchedRun struct {
	Mode      string `json:"mode"`
	Scheduler string `json:"scheduler"`
	Pods      int    `json:"pods"`
	// CreateSeconds is from the first create to the last create's answer.
	CreateSeconds float64 `json:"create_seconds"`
	// BoundSeconds is from the first create until the watch saw the last
	// pod with spec.nodeName.
	BoundSeconds float64 `json:"bound_seconds"`
	// PodsPerSecond is Pods / BoundSeconds.
	PodsPerSecond float64 `json:"pods_per_second"`
	// Backlog: the scheduler was started after the last create, and
	// BoundSeconds counts from its start (process start, informer sync
	// and all); SchedulerReadySeconds is how long it took to answer
	// /readyz.
	Backlog               bool    `json:"backlog,omitempty"`
	SchedulerReadySeconds float64 `json:"scheduler_ready_seconds,omitempty"`
	// BindRate is (Pods - 1) over the time from the first pod seen bound
	// to the last.
	BindRate float64 `json:"bind_rate"`
	// Bound is how many pods were bound when the run ended.
	Bound int `json:"bound"`
	// WithGPUIDs counts bound pods carrying api.AnnotationGPUIDs (the
	// extender's assignment).
	WithGPUIDs int `json:"with_gpu_ids"`
	// Binds counts the extender's bind calls during the run by result
	// (mlplane_extender_binds_total): anything but "bound" is a retry.
	Binds map[string]float64 `json:"binds,omitempty"`
	// APIRequests counts the API server's requests during the run
	// (apiserver_request_total) by "VERB resource[/subresource]"; PerPod
	// divides by Pods.
	APIRequests map[string]float64 `json:"api_requests,omitempty"`
	// APILatency is the API server's latency during the run
	// (apiserver_request_duration_seconds) for the writes that scheduling
	// waits on, by "VERB resource[/subresource]".
	APILatency map[string]Quantiles `json:"api_latency,omitempty"`
	// Extender is its latency histogram during the run, by verb.
	Extender map[string]Quantiles `json:"extender,omitempty"`
	// CPUSeconds is the CPU time each process used during the run (bound
	// part), by component; "bench" is this process (client and Leases).
	CPUSeconds map[string]float64 `json:"cpu_seconds"`
	// Packing is where the pods landed, once all were bound.
	Packing SchedPacking `json:"packing"`
}

// SchedPacking is how densely a run placed its pods.
type SchedPacking struct {
	// NodesUsed is the number of nodes with at least one of the pods.
	NodesUsed int `json:"nodes_used"`
	// GPUsUsed is the number of GPUs named in the pods' api.AnnotationGPUIDs
	// (0 without the extender, which assigns no GPUs).
	GPUsUsed int `json:"gpus_used"`
	// GPUsLowerBound is the fewest GPUs of the node's size that can hold
	// the pods' memory: sum of requests / GPU size, rounded up.
	GPUsLowerBound int `json:"gpus_lower_bound"`
	// NodesLowerBound is GPUsLowerBound / GPUs per node, rounded up.
	NodesLowerBound int `json:"nodes_lower_bound"`
}

// SchedReport is the result of SchedBench.
type SchedReport struct {
	Machine Machine    `json:"machine"`
	Nodes   int        `json:"nodes"`
	GPUs    string     `json:"gpus"`
	Runs    []SchedRun `json:"runs"`
}

// SchedBench starts a local cluster with Nodes KWOK nodes (GPUs published
// in-process), the extender and mlplane-scheduler, and runs each mode.
func SchedBench(ctx context.Context, o SchedBenchOptions) (*SchedReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	rep := &SchedReport{Machine: ThisMachine(), Nodes: o.Nodes, GPUs: o.GPUs}
	c := cluster.New(cluster.Options{BinDir: o.BinDir, Dir: o.Dir, Logf: o.Logf})
	if err := c.Start(ctx); err != nil {
		c.DumpLogs(os.Stderr, 20)
		_ = c.Stop()
		return nil, err
	}
	defer c.Stop()
	o.Logf("adding %d nodes of %s", o.Nodes, o.GPUs)
	if _, err := c.AddGPUNodes(ctx, fmt.Sprintf("%dx%s", o.Nodes, o.GPUs), cluster.NodeOptions{Publisher: cluster.PublishInProcess, Concurrency: 64}); err != nil {
		return nil, err
	}
	metricsPort, err := runner.FreePort()
	if err != nil {
		return nil, err
	}
	pprofPort, err := runner.FreePort()
	if err != nil {
		return nil, err
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	// The last --metrics-addr wins: the cluster does not say which port it
	// gave the extender's metrics.
	eo := cluster.ExtenderOptions{PolicyFile: o.PolicyFile, Args: append([]string{fmt.Sprintf("--metrics-addr=127.0.0.1:%d", metricsPort), fmt.Sprintf("--pprof-addr=127.0.0.1:%d", pprofPort)}, o.ExtenderArgs...)}
	o.Logf("extender profiles at http://127.0.0.1:%d/debug/pprof/", pprofPort)
	if o.PercentageOfNodesToScore != nil {
		if eo.SchedulerConfig, err = schedConfigWithPercentage(c.Dir(), *o.PercentageOfNodesToScore); err != nil {
			return nil, err
		}
	}
	if err := c.StartExtender(ctx, eo); err != nil {
		c.DumpLogs(os.Stderr, 20)
		return nil, err
	}

	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = o.ClientQPS, int(2*o.ClientQPS)
	cfg.UserAgent = "mlplane-schedbench"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	// One pod through each scheduler first: the extender refuses every verb
	// until its informers have synced (the scheduler then backs the pod
	// off), and the first calls set up connections.
	for _, mode := range o.Modes {
		if err := warmUp(ctx, cs, mode); err != nil {
			c.DumpLogs(os.Stderr, 20)
			return rep, err
		}
	}
	for r := range o.Rounds {
		for _, mode := range o.Modes {
			ns := fmt.Sprintf("sched-%s-%d", mode, r)
			o.Logf("run %s (round %d): %d pods in %s", mode, r+1, o.Pods, ns)
			run, err := schedRun(ctx, c, cs, o, mode, ns, metricsURL)
			if run != nil {
				rep.Runs = append(rep.Runs, *run)
				o.Logf("%s: created in %.1fs, %d/%d bound in %.1fs: %.1f pods/s", mode, run.CreateSeconds, run.Bound, run.Pods, run.BoundSeconds, run.PodsPerSecond)
			}
			if err != nil {
				c.DumpLogs(os.Stderr, 20)
				return rep, err
			}
			o.Logf("deleting the pods of %s", ns)
			if err := deleteAllPods(ctx, cs, ns, o.Workers); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// warmUp creates one pod for mode's scheduler in namespace sched-warmup
// and waits until it is bound.
func warmUp(ctx context.Context, cs kubernetes.Interface, mode string) error {
	const ns = "sched-warmup"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	pod := SchedPod(ns, schedulerOf(mode), 0)
	pod.Name = "warmup-" + mode
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			return false, nil // also while the ServiceAccount is missing
		}
		return err == nil && p.Spec.NodeName != "", nil
	})
}

func schedulerOf(mode string) string {
	if mode == ModeExtender {
		return api.DefaultSchedulerName
	}
	return corev1.DefaultSchedulerName
}

// SchedPod is the benchmark's GPU pod number i, as the webhook leaves it: a
// GPU memory request (annotation and extended resource), cycling through
// typical model sizes, for schedulerName.
func SchedPod(namespace, schedulerName string, i int) *corev1.Pod {
	sizes := []int64{20, 16, 8, 40, 32, 4, 72} // GiB: llama-8b, mistral-7b, phi-3, ..., qwen-32b
	gi := sizes[i%len(sizes)]
	mib := resource.NewQuantity(gi*1024, resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("model-%05d", i), Namespace: namespace,
			Labels:      map[string]string{"app": "schedbench"},
			Annotations: map[string]string{api.AnnotationGPUMemory: fmt.Sprintf("%dGi", gi)},
		},
		Spec: corev1.PodSpec{
			SchedulerName: schedulerName,
			Containers: []corev1.Container{{
				Name: "server", Image: "vllm/vllm-openai:v0.6.3",
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi"),
						api.ResourceGPUMemory: *mib,
					},
					Limits: corev1.ResourceList{api.ResourceGPUMemory: *mib},
				},
			}},
			// KWOK's nodes carry no taints; tolerate nothing extra.
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

func schedRun(ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface, o SchedBenchOptions, mode, ns, metricsURL string) (*SchedRun, error) {
	scheduler := schedulerOf(mode)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	// Pods are refused until the controller-manager has made the
	// namespace's default ServiceAccount.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("namespace %s has no default ServiceAccount: %w", ns, err)
	}
	run := &SchedRun{Mode: mode, Scheduler: scheduler, Pods: o.Pods}

	// Watch the namespace's pods; record when each is first seen bound.
	var (
		bound      atomic.Int64
		withIDs    atomic.Int64
		firstBound atomic.Int64 // unix nanos
		lastBound  atomic.Int64 // unix nanos
		seen       sync.Map     // name -> struct{}
		allBound   = make(chan struct{})
		closeOnce  sync.Once
	)
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns),
		informers.WithTransform(stripManagedFields))
	inf := factory.Core().V1().Pods().Informer()
	onPod := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" {
			return
		}
		if _, loaded := seen.LoadOrStore(p.Name, struct{}{}); loaded {
			return
		}
		now := time.Now().UnixNano()
		firstBound.CompareAndSwap(0, now)
		lastBound.Store(now)
		if p.Annotations[api.AnnotationGPUIDs] != "" {
			withIDs.Add(1)
		}
		if bound.Add(1) == int64(o.Pods) {
			closeOnce.Do(func() { close(allBound) })
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onPod,
		UpdateFunc: func(_, obj any) { onPod(obj) },
	}); err != nil {
		return nil, err
	}
	stopInf := make(chan struct{})
	defer close(stopInf)
	factory.Start(stopInf)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, errors.New("pod informer did not sync")
	}

	hBefore, _ := ScrapeHistograms(ctx, metricsURL, "mlplane_extender_request_duration_seconds", "verb")
	bindsBefore, _ := ScrapeCounters(ctx, metricsURL, "mlplane_extender_binds_total", "result")
	apiBefore, latBefore, _ := apiMetrics(ctx, cs)
	cpuBefore := componentCPU(c.Dir())

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	component := cluster.Scheduler
	if mode == ModeExtender {
		component = cluster.MlplaneScheduler
	}
	if o.Backlog {
		if err := c.StopComponent(component); err != nil {
			return nil, err
		}
		run.Backlog = true
		defer func() { // the next run needs it, even after an error here
			if !c.Running(component) {
				_ = c.StartComponent(context.Background(), component)
			}
		}()
	}
	jobs := make(chan int)
	var (
		createErr  atomic.Pointer[error]
		lastCreate atomic.Int64
		wg         sync.WaitGroup
	)
	start := time.Now()
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				_, err := cs.CoreV1().Pods(ns).Create(ctx, SchedPod(ns, scheduler, i), metav1.CreateOptions{})
				if err != nil {
					createErr.CompareAndSwap(nil, &err)
					continue
				}
				now := time.Now().UnixNano()
				for {
					cur := lastCreate.Load()
					if now <= cur || lastCreate.CompareAndSwap(cur, now) {
						break
					}
				}
			}
		}()
	}
	for i := range o.Pods {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	run.CreateSeconds = time.Duration(lastCreate.Load() - start.UnixNano()).Seconds()
	if p := createErr.Load(); p != nil {
		return run, fmt.Errorf("creating pods: %w", *p)
	}

	if o.Backlog {
		start = time.Now()
		if err := c.StartComponent(ctx, component); err != nil {
			return run, fmt.Errorf("starting %s again: %w", component, err)
		}
		run.SchedulerReadySeconds = time.Since(start).Seconds()
		// A new process: all of its CPU is the run's (the old one's,
		// before it was stopped at the start, is not).
		delete(cpuBefore, component)
	}
	var runErr error
	select {
	case <-allBound:
	case <-ctx.Done():
		runErr = fmt.Errorf("%s: %d of %d pods bound after %v", mode, bound.Load(), o.Pods, o.Timeout)
	}
	run.Bound = int(bound.Load())
	run.WithGPUIDs = int(withIDs.Load())
	run.BoundSeconds = time.Duration(lastBound.Load() - start.UnixNano()).Seconds()
	if run.Bound == o.Pods && run.BoundSeconds > 0 {
		run.PodsPerSecond = float64(o.Pods) / run.BoundSeconds
		if span := time.Duration(lastBound.Load() - firstBound.Load()).Seconds(); span > 0 {
			run.BindRate = float64(o.Pods-1) / span
		}
	}
	pk, err := packingOf(inf.GetStore().List(), o.GPUs)
	if err != nil {
		return run, err
	}
	run.Packing = pk
	cpuAfter := componentCPU(c.Dir())
	run.CPUSeconds = map[string]float64{}
	for k, v := range cpuAfter {
		if d := v - cpuBefore[k]; d > 0 {
			run.CPUSeconds[k] = d
		}
	}
	if apiAfter, latAfter, err := apiMetrics(context.Background(), cs); err == nil {
		run.APIRequests = map[string]float64{}
		for k, v := range apiAfter {
			if d := v - apiBefore[k]; d > 0 {
				run.APIRequests[k] = d
			}
		}
		run.APILatency = map[string]Quantiles{}
		for _, k := range []string{"POST pods", "POST pods/binding", "PATCH pods", "GET pods", "PATCH pods/status"} {
			if d := latAfter[k].Sub(latBefore[k]); d.Count > 0 {
				run.APILatency[k] = quantilesOf(d)
			}
		}
	}
	if bindsAfter, err := ScrapeCounters(context.Background(), metricsURL, "mlplane_extender_binds_total", "result"); err == nil {
		for k, v := range bindsAfter {
			if d := v - bindsBefore[k]; d > 0 {
				if run.Binds == nil {
					run.Binds = map[string]float64{}
				}
				run.Binds[k] = d
			}
		}
	}
	if hAfter, err := ScrapeHistograms(context.Background(), metricsURL, "mlplane_extender_request_duration_seconds", "verb"); err == nil {
		run.Extender = map[string]Quantiles{}
		for verb, h := range hAfter {
			if d := h.Sub(hBefore[verb]); d.Count > 0 {
				run.Extender[verb] = quantilesOf(d)
			}
		}
	}
	return run, runErr
}

// packingOf summarises where pods landed on nodes of gpus ("8x80Gi").
func packingOf(objs []any, gpus string) (SchedPacking, error) {
	perNode, size, err := parseGPUSpec(gpus)
	if err != nil {
		return SchedPacking{}, err
	}
	nodes, ids := map[string]bool{}, map[string]bool{}
	var totalMiB int64
	for _, o := range objs {
		p, ok := o.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" {
			continue
		}
		nodes[p.Spec.NodeName] = true
		for _, id := range api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs]) {
			ids[id] = true
		}
		q := p.Spec.Containers[0].Resources.Requests[api.ResourceGPUMemory]
		totalMiB += q.Value()
	}
	sizeMiB := size.Value() >> 20
	lb := int((totalMiB + sizeMiB - 1) / sizeMiB)
	return SchedPacking{NodesUsed: len(nodes), GPUsUsed: len(ids), GPUsLowerBound: lb, NodesLowerBound: (lb + perNode - 1) / perNode}, nil
}

// parseGPUSpec reads "8x80Gi".
func parseGPUSpec(s string) (perNode int, size resource.Quantity, err error) {
	n, q, ok := strings.Cut(s, "x")
	if !ok {
		return 0, size, fmt.Errorf("GPUs %q: want COUNTxSIZE, e.g. 8x80Gi", s)
	}
	if _, err := fmt.Sscanf(n, "%d", &perNode); err != nil || perNode < 1 {
		return 0, size, fmt.Errorf("GPUs %q: bad count", s)
	}
	if size, err = resource.ParseQuantity(q); err != nil {
		return 0, size, fmt.Errorf("GPUs %q: %w", s, err)
	}
	return perNode, size, nil
}

// schedConfigWithPercentage writes config/scheduler/config.yaml with
// percentageOfNodesToScore replaced into dir and returns its path.
func schedConfigWithPercentage(dir string, pct int) (string, error) {
	root, err := cluster.ModuleRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, cluster.ShippedSchedulerConfig))
	if err != nil {
		return "", err
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return "", err
	}
	cfg["percentageOfNodesToScore"] = pct
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "mlplane-scheduler-base.yaml")
	return path, os.WriteFile(path, out, 0o644)
}

// apiMetrics reads apiserver_request_total and
// apiserver_request_duration_seconds from the API server's /metrics, by
// "VERB resource[/subresource]".
func apiMetrics(ctx context.Context, cs kubernetes.Interface) (map[string]float64, map[string]Histogram, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, nil, err
	}
	return requestMetrics(raw)
}

// requestMetrics is apiMetrics of a /metrics text already read.
func requestMetrics(raw []byte) (map[string]float64, map[string]Histogram, error) {
	counts, err := ParseCounters(bytes.NewReader(raw), "apiserver_request_total", "verb", "resource", "subresource")
	if err != nil {
		return nil, nil, err
	}
	hists, err := ParseHistograms(bytes.NewReader(raw), "apiserver_request_duration_seconds", "verb", "resource", "subresource")
	if err != nil {
		return nil, nil, err
	}
	outC := map[string]float64{}
	for k, v := range counts {
		outC[requestKey(k)] += v
	}
	outH := map[string]Histogram{}
	for k, h := range hists {
		outH[requestKey(k)] = h // one series per verb, resource and subresource
	}
	return outC, outH, nil
}

// requestKey turns "VERB resource subresource" into "VERB resource[/subresource]".
func requestKey(k string) string {
	f := strings.Split(k, " ")
	if len(f) < 3 {
		return k
	}
	if f[2] != "" {
		return f[0] + " " + f[1] + "/" + f[2]
	}
	return f[0] + " " + f[1]
}

// deleteAllPods force-deletes every pod of ns from workers goroutines (one
// DeleteCollection of thousands of pods outlives the API server's request
// timeout) and waits until they are gone.
func deleteAllPods(ctx context.Context, cs kubernetes.Interface, ns string, workers int) error {
	zero := int64(0)
	opts := metav1.DeleteOptions{GracePeriodSeconds: &zero}
	return wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		if len(l.Items) == 0 {
			return true, nil
		}
		names := make(chan string)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range names {
					_ = cs.CoreV1().Pods(ns).Delete(ctx, n, opts) // the next List shows what is left
				}
			}()
		}
		for _, p := range l.Items {
			names <- p.Name
		}
		close(names)
		wg.Wait()
		return false, nil
	})
}

// componentCPU is the CPU time, in seconds, of each process whose command
// line mentions dir (the cluster's components), by binary name, plus this
// process as "bench". The two kube-schedulers are told apart by their
// configuration file.
func componentCPU(dir string) map[string]float64 {
	out := map[string]float64{}
	if u, err := runner.ReadUsage(os.Getpid()); err == nil {
		out["bench"] = u.CPU.Seconds()
	}
	if dir == "" {
		return out
	}
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		if p.PID == os.Getpid() {
			continue
		}
		args, err := p.CmdLine()
		if err != nil || len(args) == 0 || !strings.Contains(strings.Join(args, " "), dir) {
			continue
		}
		name := filepath.Base(args[0])
		if name == "kube-scheduler" && strings.Contains(strings.Join(args, " "), cluster.MlplaneScheduler) {
			name = cluster.MlplaneScheduler
		}
		if u, err := runner.ReadUsage(p.PID); err == nil {
			out[name] += u.CPU.Seconds()
		}
	}
	return out
}

// WriteText writes the runs as a table.
func (r *SchedReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %d CPUs, %s, %s, load average at start %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.LoadAverage)
	fmt.Fprintf(&b, "cluster: %d KWOK nodes of %s\n\n", r.Nodes, r.GPUs)
	if len(r.Runs) > 0 && r.Runs[0].Backlog {
		b.WriteString("backlog: each scheduler started after its pods were created; bound in s counts from its start\n\n")
	}
	b.WriteString("mode     | scheduler          | pods | created in s | bound in s | pods/s | first to last bind, pods/s | with gpu-ids | nodes used (bound) | GPUs used (bound)\n")
	for _, run := range r.Runs {
		pk := run.Packing
		fmt.Fprintf(&b, "%-8s | %-18s | %4d | %12.1f | %10.1f | %6.1f | %26.1f | %12d | %d (%d) | %d (%d)\n",
			run.Mode, run.Scheduler, run.Pods, run.CreateSeconds, run.BoundSeconds, run.PodsPerSecond, run.BindRate, run.WithGPUIDs,
			pk.NodesUsed, pk.NodesLowerBound, pk.GPUsUsed, pk.GPUsLowerBound)
	}
	for _, run := range r.Runs {
		if len(run.Binds) > 0 {
			fmt.Fprintf(&b, "\nextender binds during the %s run, by result:", run.Mode)
			for _, k := range slices.Sorted(maps.Keys(run.Binds)) {
				fmt.Fprintf(&b, " %s %.0f", k, run.Binds[k])
			}
			b.WriteByte('\n')
		}
		if len(run.Extender) > 0 {
			fmt.Fprintf(&b, "\nextender latency during the %s run (from its histogram)\n", run.Mode)
			b.WriteString("verb       | calls | mean ms | p50 ms | p90 ms | p99 ms\n")
			for _, v := range slices.Sorted(maps.Keys(run.Extender)) {
				q := run.Extender[v]
				fmt.Fprintf(&b, "%-10s | %5.0f | %7.2f | %6.2f | %6.2f | %6.2f\n", v, q.Count, q.Mean, q.P50, q.P90, q.P99)
			}
		}
	}
	for _, run := range r.Runs {
		if len(run.APILatency) > 0 {
			fmt.Fprintf(&b, "\nAPI server latency during the %s run (apiserver_request_duration_seconds)\n", run.Mode)
			b.WriteString("request           | count | mean ms | p50 ms | p90 ms | p99 ms\n")
			for _, k := range slices.Sorted(maps.Keys(run.APILatency)) {
				q := run.APILatency[k]
				fmt.Fprintf(&b, "%-17s | %5.0f | %7.1f | %6.1f | %6.1f | %6.1f\n", k, q.Count, q.Mean, q.P50, q.P90, q.P99)
			}
		}
		if len(run.APIRequests) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\nAPI requests per pod during the %s run (apiserver_request_total, 0.05 and above):", run.Mode)
		keys := make([]string, 0, len(run.APIRequests))
		total := 0.0
		for k, v := range run.APIRequests {
			keys = append(keys, k)
			total += v
		}
		sort.Slice(keys, func(i, j int) bool { return run.APIRequests[keys[i]] > run.APIRequests[keys[j]] })
		fmt.Fprintf(&b, " total %.1f;", total/float64(run.Pods))
		for _, k := range keys {
			if per := run.APIRequests[k] / float64(run.Pods); per >= 0.05 {
				fmt.Fprintf(&b, " %s %.2f", k, per)
			}
		}
		b.WriteByte('\n')
	}
	for _, run := range r.Runs {
		fmt.Fprintf(&b, "\nCPU seconds during the %s run (%.1f s wall, %d CPUs):", run.Mode, run.BoundSeconds, r.Machine.CPUs)
		names := make([]string, 0, len(run.CPUSeconds))
		for n := range run.CPUSeconds {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return run.CPUSeconds[names[i]] > run.CPUSeconds[names[j]] })
		for _, n := range names {
			fmt.Fprintf(&b, " %s %.1f", n, run.CPUSeconds[n])
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// stripManagedFields keeps the informer's memory down.
func stripManagedFields(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		p.ManagedFields = nil
	}
	return obj, nil
}
