package extender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/score"
	"github.com/mlplane/mlplane/internal/score/state"
)

// benchExtender is a cluster of n nodes with 8 GPUs of 80 GiB each, with
// pods of mixed sizes on about half the GPUs, and the names of every node.
func benchExtender(b *testing.B, n int) (*Extender, []string) {
	b.Helper()
	st := state.New(state.Options{Now: func() time.Time { return now }})
	rng := rand.New(rand.NewPCG(7, 7))
	sizes := []int64{4, 8, 16, 20, 24, 40}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("node-%05d", i)
		st.OnNode(gpuNode(names[i], 8, 80))
		st.OnLease(agentLease(names[i], now))
	}
	_ = st.Update(func(tx state.Txn, _ int64) error {
		for i := range n * 4 {
			node, gpu := names[rng.IntN(n)], rng.IntN(8)
			tx.Reserve(types.UID(fmt.Sprint(i)), score.Assignment{GPUs: []string{fmt.Sprintf("GPU-%s-%d", node, gpu)}, MemoryMiB: sizes[rng.IntN(len(sizes))] * gi})
		}
		return nil
	})
	return New(Options{Client: fake.NewClientset(), State: st}), names
}

// BenchmarkFilterPrioritize is one scheduling cycle's extender work as the
// scheduler sees it: a filter call and a prioritize call over HTTP, JSON
// included, with every node name.
func BenchmarkFilterPrioritize(b *testing.B) { benchVerbsHTTP(b, PathFilter, PathPrioritize) }

// BenchmarkFilter is the filter call alone over HTTP: one scheduling
// cycle's extender work with the built-in policy (candidateNodes 1), where
// the scheduler, left with one feasible node, never calls prioritize.
func BenchmarkFilter(b *testing.B) { benchVerbsHTTP(b, PathFilter) }

// benchVerbsHTTP calls the verbs at paths over HTTP, per iteration, for a
// one-GPU 20 GiB pod and every node of 500 and 5,000.
func benchVerbsHTTP(b *testing.B, paths ...string) {
	for _, n := range []int{500, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ext, names := benchExtender(b, n)
			h := ext.Handler()
			body, _ := json.Marshal(extenderv1.ExtenderArgs{Pod: gpuPod("p", 20, 1), NodeNames: &names})
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				for _, path := range paths {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptestRequest(path, body))
					if rec.Code != http.StatusOK {
						b.Fatal(rec.Body.String())
					}
				}
			}
			cpu.report(b)
		})
	}
}

// BenchmarkFilterPrioritizeCore is the same without HTTP and JSON.
func BenchmarkFilterPrioritizeCore(b *testing.B) {
	for _, n := range []int{500, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ext, names := benchExtender(b, n)
			args := &extenderv1.ExtenderArgs{Pod: gpuPod("p", 20, 2), NodeNames: &names}
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				if res := ext.Filter(args); len(*res.NodeNames) == 0 {
					b.Fatal("nothing fits")
				}
				ext.Prioritize(args)
			}
			cpu.report(b)
		})
	}
}

func httptestRequest(path string, body []byte) *http.Request {
	return httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
}

// cpuClock measures the process's CPU time (user+system) per iteration: on
// a machine shared with other builds, wall time per op says more about the
// neighbours than about the code.
type cpuClock struct{ start time.Duration }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{cpuTime()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(cpuTime()-c.start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkPreempt is the preempt verb over HTTP as kube-scheduler calls it
// on a cluster of 5,000 full nodes (8 GPUs of 80 GiB, two 40 GiB pods of
// priority 0 on each): a 60 GiB pod of priority 10, with the scheduler's
// candidate nodes, 100 (its minimum) and 500 (10% of 5,000, its default
// share), each with the victims it found by the node's total.
func BenchmarkPreempt(b *testing.B) {
	const nodes = 5000
	st := state.New(state.Options{Now: func() time.Time { return now }})
	names := make([]string, nodes)
	onNode := map[string][]*corev1.Pod{}
	for i := range nodes {
		names[i] = fmt.Sprintf("node-%05d", i)
		st.OnNode(gpuNode(names[i], 8, 80))
		st.OnLease(agentLease(names[i], now))
		for g := range 8 {
			for j := range 2 {
				p := gpuPod(fmt.Sprintf("v-%d-%d-%d", i, g, j), 40, 1)
				p.UID = types.UID(p.Name)
				p.Spec.NodeName = names[i]
				p.Annotations[api.AnnotationGPUIDs] = fmt.Sprintf("GPU-%s-%d", names[i], g)
				p.Status.Phase = corev1.PodRunning
				st.OnPod(p)
				onNode[names[i]] = append(onNode[names[i]], p)
			}
		}
	}
	ext := New(Options{Client: fake.NewClientset(), State: st, PodsOnNode: func(n string) []*corev1.Pod { return onNode[n] }})
	h := ext.Handler()
	prio := int32(10)
	pod := gpuPod("p", 60, 1)
	pod.Spec.Priority = &prio
	for _, candidates := range []int{100, 500} {
		b.Run(fmt.Sprintf("candidates=%d", candidates), func(b *testing.B) {
			args := extenderv1.ExtenderPreemptionArgs{Pod: pod, NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{}}
			for _, n := range names[:candidates] {
				// The scheduler's choice by the total: one 40 GiB pod on
				// each of two GPUs.
				args.NodeNameToMetaVictims[n] = &extenderv1.MetaVictims{Pods: []*extenderv1.MetaPod{{UID: string(onNode[n][0].UID)}, {UID: string(onNode[n][2].UID)}}}
			}
			body, _ := json.Marshal(args)
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptestRequest(PathPreempt, body))
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Body.String())
				}
				var res extenderv1.ExtenderPreemptionResult
				if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || len(res.NodeNameToMetaVictims) != candidates {
					b.Fatalf("%d nodes in the answer, want %d (%v)", len(res.NodeNameToMetaVictims), candidates, err)
				}
			}
			cpu.report(b)
		})
	}
}

// BenchmarkPreemptOnceBacklog is one round of RunPreemption with 1,000
// pending pods of priority 0 that no node fits, on 500 nodes whose GPU pods
// are of priority 0 too: a backlog of batch work that can preempt no one
// must cost little (a lookup per node and pod), not a victim search.
func BenchmarkPreemptOnceBacklog(b *testing.B) {
	st := state.New(state.Options{Now: func() time.Time { return now }})
	var names []string
	pods := map[string]*corev1.Pod{}
	onNode := map[string][]*corev1.Pod{}
	for i := range 500 {
		n := fmt.Sprintf("node-%03d", i)
		names = append(names, n)
		st.OnNode(gpuNode(n, 8, 80))
		st.OnLease(agentLease(n, now))
		for g := range 8 {
			p := gpuPod(fmt.Sprintf("full-%d-%d", i, g), 80, 1)
			p.Spec.NodeName = n
			p.Annotations[api.AnnotationGPUIDs] = fmt.Sprintf("GPU-%s-%d", n, g)
			p.Status.Phase = corev1.PodRunning
			st.OnPod(p)
			onNode[n] = append(onNode[n], p)
		}
	}
	ext := New(Options{Client: fake.NewClientset(), State: st,
		PodsOnNode: func(n string) []*corev1.Pod { return onNode[n] },
		PodCache:   func(ns, name string) (*corev1.Pod, bool) { p, ok := pods[ns+"/"+name]; return p, ok }})
	for i := range 1000 {
		p := gpuPod(fmt.Sprintf("batch-%d", i), 40, 1)
		pods[p.Namespace+"/"+p.Name] = p
		if res := ext.Filter(&extenderv1.ExtenderArgs{Pod: p, NodeNames: &names}); len(*res.NodeNames) != 0 {
			b.Fatal("a pod fits")
		}
	}
	start := time.Now().Add(PreemptionGrace + time.Second)
	b.ReportAllocs()
	for b.Loop() {
		// Put the pods back as just failed (a round forgets them).
		for _, p := range pods {
			ext.pre.failed[p.UID] = preemptorEntry{namespace: p.Namespace, name: p.Name, nodes: names, at: now}
		}
		ext.pre.done = map[types.UID]time.Time{}
		ext.PreemptOnce(context.Background(), start)
	}
}
