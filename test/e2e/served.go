package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"

	"github.com/mlplane/mlplane/hack/images/imagebuild"
	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// bridgeGateway is the real node's CNI bridge address on this host: the
// pods reach the host there.
const bridgeGateway = "10.244.0.1"

// ModelServerRepoTag is what the Deployment runs; pushed as mlplane/... .
const ModelServerRepoTag = "mlplane/model-server:e2e"

// AssessModelServed applies, with the real kubectl in a new opted-in
// namespace, a Deployment whose pods ask for 1Gi of GPU memory and a model
// at s3://models/e2e-model on an S3 server (gofakes3, in this process, on
// the real node's bridge gateway), and checks the whole path: the pod runs
// on the real node, the loader init container exits 0, and the model
// server (image serverRef) answers with exactly the model's files and digests
// and with NVIDIA_VISIBLE_DEVICES equal to the pod's mlplane.io/gpu-ids.
// A pod of a bucket that does not exist must see its loader exit 4 with
// its message in the init container's status. The webhook, scheduler,
// extender and the GPUs of the real node are the caller's: processes
// (TestModelServed) or pods (test/install).
func AssessModelServed(ctx context.Context, t *testing.T, cfg *envconf.Config, c *cluster.Cluster, serverRef string) {
	t.Helper()
	cs := Clientset(t, cfg)
	node := c.RealNodeName()
	// (1) S3 on the bridge gateway, with the model.
	model := modeltest.Small()
	backend := s3mem.New()
	if err := backend.CreateBucket("models"); err != nil {
		t.Fatal(err)
	}
	for _, p := range model.Paths() {
		if _, err := backend.PutObject("models", "e2e-model/"+p, map[string]string{}, bytes.NewReader(model[p]), int64(len(model[p])), nil); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(bridgeGateway, "0"))
	if err != nil {
		t.Fatalf("listen on the bridge gateway: %v", err)
	}
	srv := &http.Server{Handler: gofakes3.New(backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	endpoint := "http://" + l.Addr().String()

	// (3) Namespace and Secret.
	ns := CreateNamespace(ctx, t, cfg, "model", map[string]string{api.LabelInject: api.NamespaceInjectEnabled})
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "s3"},
		StringData: map[string]string{
			"AWS_ACCESS_KEY_ID":     "e2e",
			"AWS_SECRET_ACCESS_KEY": "e2e-secret",
			"AWS_ENDPOINT_URL_S3":   endpoint,
			"AWS_REGION":            "us-east-1",
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// (4) The Deployment, with the real kubectl.
	manifest := cluster.ModelServerDeployment{Name: "served", ModelURI: "s3://models/e2e-model", ModelSecret: "s3",
		GPUMemory: "1Gi", Image: serverRef}.YAML()
	applied := time.Now()
	if _, err := Kubectl(ctx, cfg, manifest, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}

	// (5) Ready, recording when each step was first seen.
	var scheduled, initStarted, initFinished, ready time.Duration
	var pod corev1.Pod
	var why string
	err = wait.For(func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=served"})
		if err != nil || len(list.Items) != 1 {
			why = fmt.Sprintf("list: %v, %d pods", err, len(list.Items))
			return false, nil
		}
		pod = list.Items[0]
		now := time.Since(applied)
		if scheduled == 0 && pod.Spec.NodeName != "" {
			scheduled = now
		}
		for _, s := range pod.Status.InitContainerStatuses {
			if initStarted == 0 && (s.State.Running != nil || s.State.Terminated != nil) {
				initStarted = now
			}
			if initFinished == 0 && s.State.Terminated != nil {
				initFinished = now
			}
			if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
				return false, fmt.Errorf("init container %s exited %d: %s", s.Name, t.ExitCode, t.Message)
			}
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready = now
				return true, nil
			}
		}
		why = fmt.Sprintf("phase %s, node %q, conditions %v", pod.Status.Phase, pod.Spec.NodeName, pod.Status.Conditions)
		return false, nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(100*time.Millisecond))
	if err != nil {
		t.Fatalf("the model server's pod: %v (last: %s)", err, why)
	}
	t.Logf("timings after kubectl apply: scheduled %s, init container started %s, finished %s, Ready %s",
		scheduled.Round(time.Millisecond), initStarted.Round(time.Millisecond),
		initFinished.Round(time.Millisecond), ready.Round(time.Millisecond))

	if pod.Spec.NodeName != node {
		t.Errorf("pod on %s, want the real node %s", pod.Spec.NodeName, node)
	}
	if len(pod.Spec.InitContainers) == 0 || len(pod.Status.InitContainerStatuses) == 0 {
		t.Fatalf("no init container injected: %+v", pod.Spec.InitContainers)
	}
	for _, s := range pod.Status.InitContainerStatuses {
		if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
			t.Errorf("init container %s: %+v, want exited 0", s.Name, s.State)
		}
	}
	gpuIDs := pod.Annotations[api.AnnotationGPUIDs]
	if gpuIDs == "" {
		t.Errorf("pod has no %s annotation", api.AnnotationGPUIDs)
	}

	body := getBytes(ctx, t, "http://"+net.JoinHostPort(pod.Status.PodIP, "8080")+"/")
	var got modelResponse
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("GET /: %v: %s", err, body)
	}
	if got.Revision == "" {
		t.Errorf("GET /: empty revision")
	}
	want := expectedResponse(model, envOf(pod.Spec.InitContainers[0], api.EnvModelURI), got.Revision,
		&gpuIDs, envOf(pod.Spec.Containers[0], api.EnvGPUMemoryMiB), pod.Name, ns)
	if wantB := encodeResponse(want); !bytes.Equal(body, wantB) {
		t.Errorf("GET / answered\n%s\nwant\n%s", body, wantB)
	}
	if m := envOf(pod.Spec.Containers[0], api.EnvGPUMemoryMiB); m == nil || *m != "1024" {
		t.Errorf("%s %v, want 1024 (1Gi)", api.EnvGPUMemoryMiB, m)
	}
	if got.NvidiaVisibleDevices == nil || *got.NvidiaVisibleDevices != gpuIDs {
		t.Errorf("NVIDIA_VISIBLE_DEVICES %v, want the pod's %s %q", got.NvidiaVisibleDevices, api.AnnotationGPUIDs, gpuIDs)
	}

	// (6) A bucket that does not exist: the loader exits 4.
	bad := cluster.RealNodePod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "missing", Labels: map[string]string{"app": "missing"},
			Annotations: map[string]string{api.AnnotationModelURI: "s3://no-such-bucket/e2e-model", api.AnnotationModelSecret: "s3"}},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "server", Image: serverRef}}},
	})
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var term *corev1.ContainerStateTerminated
	err = wait.For(func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "missing", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, s := range p.Status.InitContainerStatuses {
			if s.State.Terminated != nil {
				term = s.State.Terminated
			} else if s.LastTerminationState.Terminated != nil {
				term = s.LastTerminationState.Terminated
			}
		}
		why = fmt.Sprintf("phase %s, node %q, init %+v", p.Status.Phase, p.Spec.NodeName, p.Status.InitContainerStatuses)
		return term != nil, nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatalf("pod missing: %v (last: %s)", err, why)
	}
	if term.ExitCode != 4 || !strings.HasPrefix(term.Message, "model-loader: not found:") {
		t.Errorf("loader of a missing bucket: exit %d, message %q; want 4, \"model-loader: not found: ...\"", term.ExitCode, term.Message)
	}
	t.Logf("missing bucket: exit %d: %s", term.ExitCode, strings.TrimSpace(term.Message))
}

// BuildImage builds one of imagebuild.Images for linux/amd64 and returns
// its image.
func BuildImage(ctx context.Context, t *testing.T, name string) v1.Image {
	t.Helper()
	sel, err := imagebuild.Select([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	built, err := imagebuild.Build(ctx, sel, imagebuild.Options{Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}}})
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	m, err := built[0].Index.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("image %s: %v, %d manifests", name, err, len(m.Manifests))
	}
	img, err := built[0].Index.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// unpublishGPUs stops the real node's node agent and takes its inventory
// and GPU memory off the node, so that later features see the node as
// before.
func unpublishGPUs(t *testing.T, c *cluster.Cluster, node string) {
	ctx := context.Background()
	if err := c.StopComponent(cluster.NodeAgent(node)); err != nil {
		t.Logf("stop the real node's agent: %v", err)
	}
	key := strings.ReplaceAll(api.NodeAnnotationGPUs, "/", "~1")
	res := strings.ReplaceAll(string(api.ResourceGPUMemory), "/", "~1")
	if _, err := c.Client().CoreV1().Nodes().Patch(ctx, node, types.JSONPatchType,
		[]byte(`[{"op":"remove","path":"/metadata/annotations/`+key+`"}]`), metav1.PatchOptions{}); err != nil {
		t.Logf("remove the real node's inventory: %v", err)
	}
	if _, err := c.Client().CoreV1().Nodes().Patch(ctx, node, types.JSONPatchType,
		[]byte(`[{"op":"remove","path":"/status/capacity/`+res+`"},{"op":"remove","path":"/status/allocatable/`+res+`"}]`),
		metav1.PatchOptions{}, "status"); err != nil {
		t.Logf("remove the real node's GPU memory: %v", err)
	}
	_ = c.Client().CoordinationV1().Leases(api.LeaseNamespace).Delete(ctx, api.LeaseName(node), metav1.DeleteOptions{})
}

// modelResponse mirrors examples/model-server's Response (package main).
type modelResponse struct {
	Bytes                int64       `json:"bytes"`
	Digest               string      `json:"digest"`
	Files                []modelFile `json:"files"`
	GPUMemoryMiB         *string     `json:"gpuMemoryMiB"`
	Namespace            *string     `json:"namespace"`
	NvidiaVisibleDevices *string     `json:"nvidiaVisibleDevices"`
	Pod                  *string     `json:"pod"`
	Revision             string      `json:"revision"`
	URI                  string      `json:"uri"`
}

type modelFile struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// expectedResponse is the document the model server answers for model.
func expectedResponse(model modeltest.Model, uri *string, revision string, gpuIDs, gpuMiB *string, pod, ns string) modelResponse {
	r := modelResponse{Files: []modelFile{}, GPUMemoryMiB: gpuMiB, Namespace: &ns, NvidiaVisibleDevices: gpuIDs, Pod: &pod, Revision: revision}
	if uri != nil {
		r.URI = *uri
	}
	paths := model.Paths()
	sort.Strings(paths)
	var lines strings.Builder
	for _, p := range paths {
		f := modelFile{Path: p, SHA256: modeltest.SHA256(model[p]), Size: int64(len(model[p]))}
		r.Files = append(r.Files, f)
		r.Bytes += f.Size
		fmt.Fprintf(&lines, "%s %s %d\n", f.Path, f.SHA256, f.Size)
	}
	d := sha256.Sum256([]byte(lines.String()))
	r.Digest = "sha256:" + hex.EncodeToString(d[:])
	return r
}

func encodeResponse(r modelResponse) []byte {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// envOf is the literal value of env name in c, nil when c has none.
func envOf(c corev1.Container, name string) *string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			v := e.Value
			return &v
		}
	}
	return nil
}

// getBytes polls url until it answers 200 and returns the body unchanged.
func getBytes(ctx context.Context, t *testing.T, url string) []byte {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var body []byte
	var last string
	err := wait.For(func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		last = resp.Status
		return resp.StatusCode == http.StatusOK, nil
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatalf("GET %s: %v (last %s)", url, err, last)
	}
	return body
}
