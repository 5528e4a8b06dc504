package custommetrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/common/expfmt"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/metadata/metadatalister"
)

// Target is one node agent to scrape.
type Target struct {
	Node string
	// Addr is the host:port of the agent's plain-HTTP /metrics.
	Addr string
}

// maxResponseBytes bounds one agent's /metrics: a node agent with 8 GPUs
// and 100 pods serves under 100 KiB.
const maxResponseBytes = 16 << 20

// CollectorOptions configures a Collector.
type CollectorOptions struct {
	// Targets lists the agents to scrape, once per round. Required.
	Targets func() []Target
	// Store receives each node's figures. Required.
	Store *Store
	// Interval is the time between the starts of two rounds. Default 15s.
	Interval time.Duration
	// Timeout bounds one agent's scrape. Default 5s.
	Timeout time.Duration
	// Parallelism is how many agents are scraped at once. Default 64.
	Parallelism int
	// Client makes the requests. Default: an http.Client that ignores
	// proxy settings (agents are reached at pod addresses).
	Client *http.Client
	// Now is the clock scrapes are stamped with. Default time.Now.
	Now func() time.Time
	// Logger reports agents that start failing and recover. Default
	// logr.Discard().
	Logger logr.Logger
}

// Collector scrapes every node agent each Interval into a Store, as
// metrics-server scrapes kubelets.
type Collector struct {
	opts   CollectorOptions
	rounds atomic.Int64

	mu sync.Mutex
	// failing holds the last error of each agent whose last scrape failed,
	// and skipping what was left out of its last good scrape, so that
	// either is logged when it starts or changes, not each round.
	failing, skipping map[string]string
}

// NewCollector applies the defaults of opts. It panics without Targets or
// Store: a programming error.
func NewCollector(opts CollectorOptions) *Collector {
	if opts.Targets == nil || opts.Store == nil {
		panic("custommetrics: CollectorOptions needs Targets and Store")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultScrapeTimeout
	}
	if opts.Parallelism <= 0 {
		opts.Parallelism = 64
	}
	if opts.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		tr.MaxIdleConnsPerHost = 1
		opts.Client = &http.Client{Transport: tr}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return &Collector{opts: opts, failing: map[string]string{}, skipping: map[string]string{}}
}

// Run collects at once and then every Interval (from the start of one round
// to the start of the next; a round that takes longer is followed at once)
// until ctx ends.
func (c *Collector) Run(ctx context.Context) {
	wait.NonSlidingUntilWithContext(ctx, c.Collect, c.opts.Interval)
}

// Rounds is how many rounds have completed.
func (c *Collector) Rounds() int64 { return c.rounds.Load() }

// Collect scrapes every target once, concurrently, stores what each
// answered and forgets the nodes that are no longer targets. A failed
// scrape leaves the node's previous figures in the Store, where they age.
func (c *Collector) Collect(ctx context.Context) {
	start := c.opts.Now()
	targets := c.opts.Targets()
	current := make(map[string]bool, len(targets))
	sem := make(chan struct{}, c.opts.Parallelism)
	var wg sync.WaitGroup
	for _, t := range targets {
		current[t.Node] = true
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			at := c.opts.Now()
			pods, skipped, err := c.Scrape(ctx, t)
			c.report(t, skipped, err)
			if err == nil {
				c.opts.Store.Set(t.Node, at, pods)
			}
		}()
	}
	wg.Wait()
	c.opts.Store.Retain(func(node string) bool { return current[node] })
	c.mu.Lock()
	for _, m := range []map[string]string{c.failing, c.skipping} {
		for node := range m {
			if !current[node] {
				delete(m, node)
			}
		}
	}
	c.mu.Unlock()
	now := c.opts.Now()
	roundSeconds.Set(now.Sub(start).Seconds())
	nodes, pods := c.opts.Store.Counts(now.Add(-MaxAge(c.opts.Interval)))
	freshNodes.Set(float64(nodes))
	freshPods.Set(float64(pods))
	c.rounds.Add(1)
}

// Scrape reads one agent's /metrics: ParseAgentMetrics's pods and the
// series it left out, or why the scrape failed.
func (c *Collector) Scrape(ctx context.Context, t Target) (map[types.UID]*PodGPU, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	url := "http://" + t.Addr + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := c.opts.Client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body := http.MaxBytesReader(nil, resp.Body, maxResponseBytes)
	pods, skipped, err := ParseAgentMetrics(body, expfmt.ResponseFormat(resp.Header))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return pods, skipped, nil
}

// report logs a target's failure, or the series left out of its scrape,
// when either starts or changes, and its recovery, and counts the scrape.
func (c *Collector) report(t Target, skipped []string, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	scrapesTotal.WithLabelValues(result).Inc()
	skippedSeries.Add(float64(len(skipped)))
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, wasFailing := c.failing[t.Node]
	switch {
	case err != nil && (!wasFailing || prev != err.Error()):
		c.failing[t.Node] = err.Error()
		c.opts.Logger.Info("scraping a node agent failed; its figures age until they are not served", "node", t.Node, "addr", t.Addr, "err", err.Error())
	case err == nil && wasFailing:
		delete(c.failing, t.Node)
		c.opts.Logger.Info("scraping a node agent works again", "node", t.Node, "addr", t.Addr)
	}
	if err != nil {
		return
	}
	// The first reason (they are sorted) stands for the rest.
	summary := ""
	if len(skipped) > 0 {
		summary = fmt.Sprintf("%d series, first %s", len(skipped), skipped[0])
	}
	if summary != c.skipping[t.Node] {
		if summary != "" {
			c.opts.Logger.Info("series of a node agent left out", "node", t.Node, "addr", t.Addr, "skipped", summary)
			c.skipping[t.Node] = summary
		} else {
			delete(c.skipping, t.Node)
		}
	}
}

// NodeTargets lists, from a lister of Node metadata, the nodes whose agent
// publishes where to scrape it (annotation), in a form Collector can use.
// An address that is not host:port is logged once per value and skipped.
func NodeTargets(nodes metadatalister.Lister, annotation string, log logr.Logger) func() []Target {
	var mu sync.Mutex
	bad := map[string]string{} // node -> the malformed value logged
	return func() []Target {
		list, err := nodes.List(labels.Everything())
		if err != nil {
			log.Error(err, "listing nodes")
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		out := make([]Target, 0, len(list))
		for _, n := range list {
			addr, ok := n.Annotations[annotation]
			if !ok {
				continue
			}
			if err := validAddr(addr); err != nil {
				if bad[n.Name] != addr {
					bad[n.Name] = addr
					log.Info("node publishes an agent metrics address that is not host:port; not scraped", "node", n.Name, "annotation", annotation, "value", addr, "err", err.Error())
				}
				continue
			}
			delete(bad, n.Name)
			out = append(out, Target{Node: n.Name, Addr: addr})
		}
		return out
	}
}

func validAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("no host in %q", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}
