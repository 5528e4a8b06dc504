package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
)

// onNode pins p to node.
func onNode(p *corev1.Pod, node string) *corev1.Pod {
	p.Spec.NodeSelector = map[string]string{corev1.LabelHostname: node}
	return p
}

// waitBound waits until pod ns/name is bound and returns it.
func waitBound(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	err := wait.For(func(ctx context.Context) (bool, error) {
		var err error
		p, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Spec.NodeName != "", nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
	if err != nil {
		t.Fatalf("pod %s/%s not bound: %v (last: %+v)", ns, name, err, p.Status.Conditions)
	}
	return p
}

// waitUnschedulable waits until pod ns/name's PodScheduled message contains
// want.
func waitUnschedulable(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, want string) {
	t.Helper()
	var last string
	err := wait.For(func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		msg, ok := unschedulable(p)
		last = msg
		return ok && strings.Contains(msg, want), nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
	if err != nil {
		t.Fatalf("pod %s/%s: PodScheduled message %q lacks %q: %v", ns, name, last, want, err)
	}
	t.Logf("pod %s: PodScheduled: %s", name, last)
}

// filterCall posts a filter request straight to the local extender, with
// the scheduler's client certificate.
func filterCall(ctx context.Context, t *testing.T, c *cluster.Cluster, pod *corev1.Pod, nodes []string) *extenderv1.ExtenderFilterResult {
	t.Helper()
	body, err := json.Marshal(&extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.ExtenderURL()+"/filter", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	tlsCfg, err := c.ExtenderClientTLS(true)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res extenderv1.ExtenderFilterResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatalf("filter answer (HTTP %d): %v", resp.StatusCode, err)
	}
	return &res
}

// initGPUPod is a pod without the webhook's annotations whose only GPU
// request is on its init container, as Kubernetes counts it: mib MiB.
func initGPUPod(ns, name string, mib int64) *corev1.Pod {
	q := *resource.NewQuantity(mib, resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			SchedulerName: api.DefaultSchedulerName,
			InitContainers: []corev1.Container{{Name: "warmup", Image: "registry.example/trt:fake",
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{api.ResourceGPUMemory: q}}}},
			Containers:                    []corev1.Container{{Name: "server", Image: "registry.example/vllm:fake"}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

// TestInitContainerGPU: a pod whose init container asks for GPU memory is
// refused by nodes without GPUs, gets gpu-ids and is booked; through the
// webhook, its GPU init container gets the GPU wiring (issue 16 item 2).
func TestInitContainerGPU(t *testing.T) {
	f := features.New("a GPU request on an init container is placed, booked and wired").
		Assess("the extender counts it as Kubernetes does", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			cs := Clientset(t, cfg)
			node := AddNodes(ctx, t, c, "1x2x24Gi", "initgpu-", cluster.PublishInProcess)[0]
			bare := AddNodes(ctx, t, c, "1x1x24Gi", "initnogpu-", cluster.PublishNone)
			ns := CreateNamespace(ctx, t, cfg, "initgpu", nil)

			// A node with no GPU inventory fails the filter; before the fix
			// the pod passed every node.
			res := filterCall(ctx, t, c, initGPUPod(ns, "probe", 20480), bare)
			want := "node has no " + api.NodeAnnotationGPUs + " annotation (is the mlplane node agent running there?)"
			if (res.NodeNames != nil && len(*res.NodeNames) > 0) || res.FailedAndUnresolvableNodes[bare[0]] != want {
				t.Fatalf("filter of the GPU-less node %s: passed %v, failed %v, want failed %q", bare[0], res.NodeNames, res.FailedAndUnresolvableNodes, want)
			}

			if _, err := cs.CoreV1().Pods(ns).Create(ctx, onNode(initGPUPod(ns, "warm", 20480), node), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			p := waitBound(ctx, t, cs, ns, "warm")
			ids := api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs])
			if p.Spec.NodeName != node || len(ids) != 1 || (ids[0] != cluster.FakeUUID(node, 0) && ids[0] != cluster.FakeUUID(node, 1)) {
				t.Fatalf("pod on %s with gpu-ids %v, want one GPU of %s", p.Spec.NodeName, ids, node)
			}
			// The booking: 20480 of the 24576 MiB GPU are taken, so a pod
			// needing 8192 MiB on each of the two GPUs does not fit, though
			// the node's total (49152 - 20480 = 28672 >= 16384) would.
			free := "24576, 4096"
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, onNode(gpuPodSpec(ns, "pair", "pair", 8, 2), node), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitUnschedulable(ctx, t, cs, ns, "pair", "1 GPU with at least 8192 MiB free, pod needs 8192 MiB per GPU on 2 GPUs (free per GPU: "+free+" MiB)")
			checkNoOversubscription(ctx, t, cs)
			for _, app := range []string{"warm", "pair"} {
				deletePods(ctx, t, cs, ns, app) // before their node goes
			}
			return ctx
		}).
		Assess("the webhook wires the GPU init container", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireComponent(ctx, t, cluster.Webhook)
			RequireComponent(ctx, t, cluster.Extender)
			cs := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "initwh", injectEnabled)
			p := initGPUPod(ns, "wired", 10240)
			p.Annotations = map[string]string{api.AnnotationGPUMemory: "10Gi"}
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			p = waitBound(ctx, t, cs, ns, "wired")
			env := map[string]corev1.EnvVar{}
			for _, e := range p.Spec.InitContainers[0].Env {
				env[e.Name] = e
			}
			vd := env[api.EnvNvidiaVisibleDevices]
			if vd.ValueFrom == nil || vd.ValueFrom.FieldRef == nil || vd.ValueFrom.FieldRef.FieldPath != "metadata.annotations['"+api.AnnotationGPUIDs+"']" || env[api.EnvGPUMemoryMiB].Value != "10240" {
				t.Errorf("init container env %+v: want %s from gpu-ids and %s=10240", p.Spec.InitContainers[0].Env, api.EnvNvidiaVisibleDevices, api.EnvGPUMemoryMiB)
			}
			if ids := api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs]); len(ids) != 1 {
				t.Errorf("gpu-ids %v, want one GPU", ids)
			}
			if s := p.Annotations[api.AnnotationStatus]; !strings.Contains(s, `"gpuInitContainers":["warmup"]`) {
				t.Errorf("%s = %s, want gpuInitContainers [warmup]", api.AnnotationStatus, s)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestGPUModel: on a node with an H100 and an L4, pods get the model they
// ask for, avoid the one they refuse, and a model no node has is reported
// per node; the webhook denies a bad list (issue 16 item 6).
func TestGPUModel(t *testing.T) {
	f := features.New("GPU models: mlplane.io/gpu-model and gpu-model-avoid").
		Assess("pods get the GPU model they ask for", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			if !c.HasBin("node-agent") {
				t.Skip("bin/node-agent is not built")
			}
			cs := Clientset(t, cfg)
			node := AddAgentlessNode(ctx, t, c, "1x2x80Gi", "modelmix-")
			// The fake backend's YAML spec gives each GPU group its model.
			spec := filepath.Join(t.TempDir(), "gpus.yaml")
			if err := os.WriteFile(spec, []byte("gpus:\n- model: NVIDIA H100 80GB HBM3\n  memory: 80Gi\n- model: NVIDIA L4\n  memory: 24Gi\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := c.StartNodeAgent(ctx, node, spec); err != nil {
				t.Fatal(err)
			}
			if err := wait.For(func(ctx context.Context) (bool, error) {
				inv, alloc, _, err := nodeGPUs(ctx, cs, node)
				return err == nil && len(inv) == 2 && alloc == 104*1024, nil
			}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(250*time.Millisecond)); err != nil {
				t.Fatalf("node %s: the agent's inventory did not arrive: %v", node, err)
			}
			ns := CreateNamespace(ctx, t, cfg, "gpumodel", nil)
			for _, tc := range []struct {
				name, key, value string
				gpu              int
			}{
				// binpack alone would pick the L4 for 10Gi
				{"h100", api.AnnotationGPUModel, "h100", 0},
				// every other node's GPUs are "Fake GPU ..."
				{"not-h100", api.AnnotationGPUModelAvoid, "Fake GPU, H100", 1},
			} {
				p := gpuPodSpec(ns, tc.name, tc.name, 10, 1)
				p.Annotations[tc.key] = tc.value
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				p = waitBound(ctx, t, cs, ns, tc.name)
				if got, want := p.Annotations[api.AnnotationGPUIDs], cluster.FakeUUID(node, tc.gpu); p.Spec.NodeName != node || got != want {
					t.Errorf("pod %s (%s: %s) on %s with gpu-ids %q, want %s on %s", tc.name, tc.key, tc.value, p.Spec.NodeName, got, want, node)
				}
			}
			p := gpuPodSpec(ns, "a100", "a100", 10, 1)
			p.Annotations[api.AnnotationGPUModel] = "A100"
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitUnschedulable(ctx, t, cs, ns, "a100", "no GPU of model A100 (node has NVIDIA H100 80GB HBM3 x1, NVIDIA L4 x1)")
			checkNoOversubscription(ctx, t, cs)
			for _, app := range []string{"h100", "not-h100", "a100"} {
				deletePods(ctx, t, cs, ns, app) // before their node goes
			}
			return ctx
		}).
		Assess("the webhook denies a bad model list", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireComponent(ctx, t, cluster.Webhook)
			cs := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "gpumodelwh", injectEnabled)
			p := gpuPodSpec(ns, "bad", "bad", 10, 1)
			p.Annotations[api.AnnotationGPUModel] = "H100,,A100"
			_, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			want := `annotation mlplane.io/gpu-model: invalid value "H100,,A100": model 2 is empty; want a comma-separated list of at most 16 GPU models such as "H100,A100" (letters, digits, spaces, '-', '_' and '.')`
			if err == nil || !strings.Contains(err.Error(), "denied the request: "+want) {
				t.Fatalf("create: %v, want a denial with %s", err, want)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
