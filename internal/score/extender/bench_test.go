package extender

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

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
func BenchmarkFilterPrioritize(b *testing.B) {
	for _, n := range []int{500, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ext, names := benchExtender(b, n)
			h := ext.Handler()
			body, _ := json.Marshal(extenderv1.ExtenderArgs{Pod: gpuPod("p", 20, 1), NodeNames: &names})
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				for _, path := range []string{PathFilter, PathPrioritize} {
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
