package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/mutate"
	"github.com/mlplane/mlplane/internal/score/extender"
	"github.com/mlplane/mlplane/internal/score/state"
	"github.com/mlplane/mlplane/internal/webhook"
)

// discardResponse keeps nothing, so a benchmark measures the handler.
type discardResponse struct {
	h    http.Header
	code int
	n    int
}

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }
func (d *discardResponse) WriteHeader(code int)        { d.code = code }

// serve runs h on body as POST path, b.N times.
func serve(b *testing.B, h http.Handler, path string, body []byte) {
	req := httptest.NewRequest(http.MethodPost, path, nil)
	req.Header.Set("Content-Type", "application/json")
	rd := bytes.NewReader(body)
	w := &discardResponse{h: http.Header{}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		req.ContentLength = int64(len(body))
		w.code, w.n = 0, 0
		h.ServeHTTP(w, req)
		if w.code != 0 && w.code != http.StatusOK {
			b.Fatalf("HTTP %d", w.code)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is this process's CPU time (user+system, GC included): on a
// machine shared with other work, CPU per op says more about the code than
// wall time per op (the extender's benchmarks do the same).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWebhookHandler is the webhook's handler (decode, namespace
// lookup, mutate, encode) on the vLLM pod with 1, 10 and 50 containers, the
// built-in configuration: how its cost grows with pod size, without TLS.
func BenchmarkWebhookHandler(b *testing.B) {
	m, err := mutate.New(nil, mutate.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ns := webhook.StaticNamespaces{BenchNamespace: {api.LabelInject: api.NamespaceInjectEnabled}}
	h := webhook.NewHandler(webhook.MutatorFunc(func() *mutate.Mutator { return m }), ns, webhook.HandlerOptions{})
	for _, n := range []int{1, 10, 50} {
		body, err := AdmissionReview(VLLMPod(BenchNamespace, n))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) { serve(b, h, webhook.Path, body) })
	}
}

// benchNow is the fixed clock of the extender benchmarks, so that no Lease
// expires however long they run.
var benchNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// extenderFixture is an extender whose state holds nodes of 8 x 80 GiB GPUs,
// every Lease fresh, and a quarter of the GPU memory in use (pods of 8 to 40
// GiB), as the informers would feed it.
func extenderFixture(b *testing.B, nodes int) (*extender.Extender, []string) {
	st := state.New(state.Options{Now: func() time.Time { return benchNow }})
	names := make([]string, nodes)
	renewed := metav1.NewMicroTime(benchNow.Add(-time.Second))
	for i := range nodes {
		name := fmt.Sprintf("gpu-node-%d", i)
		names[i] = name
		gpus := make([]api.GPU, 8)
		for g := range gpus {
			gpus[g] = api.GPU{Index: g, UUID: fmt.Sprintf("GPU-%08x-%d", i, g), Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 80 * 1024, Healthy: true}
		}
		st.OnNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{api.NodeAnnotationGPUs: api.EncodeInventory(gpus)}}})
		st.OnLease(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: api.LeaseNamespace, Name: api.LeaseName(name)}, Spec: coordinationv1.LeaseSpec{RenewTime: &renewed}})
		// A quarter of the memory in use: GPU g holds 0, 8, ... or 40 GiB.
		for g := range gpus {
			gi := int64((g+i)%6) * 8
			if gi == 0 {
				continue
			}
			pod := GPUPod(fmt.Sprintf("p-%d-%d", i, g), gi, 1)
			pod.Spec.NodeName = name
			pod.Annotations[api.AnnotationGPUIDs] = gpus[g].UUID
			st.OnPod(pod)
		}
	}
	ext := extender.New(extender.Options{Client: fake.NewClientset(), State: st})
	return ext, names
}

// GPUPod is a pod as the webhook leaves it: memGi on each of count GPUs.
func GPUPod(name string, memGi int64, count int) *corev1.Pod {
	mib := resource.NewQuantity(memGi*1024*int64(count), resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: name, UID: types.UID("uid-" + name),
			Annotations: map[string]string{api.AnnotationGPUMemory: fmt.Sprintf("%dGi", memGi), api.AnnotationGPUCount: fmt.Sprint(count)}},
		Spec: corev1.PodSpec{SchedulerName: api.DefaultSchedulerName, Containers: []corev1.Container{{Name: "server",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{api.ResourceGPUMemory: *mib}, Limits: corev1.ResourceList{api.ResourceGPUMemory: *mib}}}}},
	}
}

// BenchmarkExtender is one filter and one prioritize call as the scheduler
// makes them (JSON over the extender's HTTP handler, NodeNames since the
// extender is nodeCacheCapable) with every node a candidate, at 100, 1,000
// and 5,000 nodes. (kube-scheduler sends only the feasible nodes it found:
// by default at most max(100, N x (50 - N/125)%), e.g. 420 of 1,000 and
// 500 of 5,000.)
func BenchmarkExtender(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		ext, names := extenderFixture(b, n)
		h := ext.Handler()
		pod := GPUPod("incoming", 20, 1)
		body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("verb=filter/nodes=%d", n), func(b *testing.B) { serve(b, h, extender.PathFilter, body) })
		b.Run(fmt.Sprintf("verb=prioritize/nodes=%d", n), func(b *testing.B) { serve(b, h, extender.PathPrioritize, body) })
	}
}

// BenchmarkWebhookTLS serves the mlplane handler and a no-op
// controller-runtime admission.Webhook over TLS and HTTP/2 (httptest, one
// connection) and loads each from parallel clients in this process: the
// in-process counterpart of `bench webhook`, for -cpuprofile.
func BenchmarkWebhookTLS(b *testing.B) {
	m, err := mutate.New(nil, mutate.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ns := webhook.StaticNamespaces{BenchNamespace: {api.LabelInject: api.NamespaceInjectEnabled}}
	handlers := map[string]http.Handler{
		TargetMlplane: webhook.NewHandler(webhook.MutatorFunc(func() *mutate.Mutator { return m }), ns, webhook.HandlerOptions{}),
		TargetNoop: &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
			return admission.Allowed("")
		})},
	}
	body, err := AdmissionReview(VLLMPod(BenchNamespace, 1))
	if err != nil {
		b.Fatal(err)
	}
	for _, target := range []string{TargetNoop, TargetMlplane} {
		srv := httptest.NewUnstartedServer(handlers[target])
		srv.EnableHTTP2 = true
		srv.StartTLS()
		client := srv.Client()
		b.Run("target="+target, func(b *testing.B) {
			b.SetParallelism(4) // 8 clients on 2 CPUs
			b.ReportAllocs()
			cpu0 := cpuTime()
			defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op") }()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 0, 64<<10)
				for pb.Next() {
					var err error
					if buf, err = post(context.Background(), client, srv.URL+webhook.Path, body, buf[:0], target == TargetMlplane); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		srv.Close()
	}
}
