package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mlplane/mlplane/hack/images/imagebuild"
	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
	"github.com/mlplane/mlplane/internal/mutate"
)

// Hidden subcommands: detached helpers that outlive `demo up`.
const (
	// registryCommand serves the real node's images
	// (cluster.RealNodeOptions.RegistryCommand).
	registryCommand = "registry"
	// s3Command serves the demo model over S3 on the real node's bridge.
	s3Command = "serve-s3"
)

// The model the real node serves: four files, 64 MiB, in an S3 bucket.
const (
	servedName   = "served-model"
	servedBucket = "models"
	servedPrefix = "demo-model"
	servedGPUMem = "4Gi"
	// bridgeGateway is the host's address on the real node's pod bridge:
	// pods reach the S3 helper there, and nothing outside this host can.
	bridgeGateway = "10.244.0.1"
)

// demoModel is the served model's files: deterministic bytes (seed 42).
func demoModel() modeltest.Model {
	return modeltest.New(42, map[string]int{
		"config.json":                      2 << 10,
		"tokenizer.json":                   512 << 10,
		"model-00001-of-00002.safetensors": 40 << 20,
		"model-00002-of-00002.safetensors": 23<<20 + 512<<10,
	})
}

// serveRegistry is `demo registry --addr 127.0.0.1:PORT`: imagebuild's
// registry (go-containerregistry), loopback only, until SIGTERM. It holds
// the real node's host lock, inherited as fd 3, while it runs.
func serveRegistry(args []string) error {
	fs := flag.NewFlagSet(registryCommand, flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "loopback address to serve on")
	_ = fs.Parse(args)
	reg, err := imagebuild.StartRegistry(*addr, "", nil)
	if err != nil {
		return err
	}
	fmt.Printf("registry: serving http://%s\n", reg.Addr)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	<-ctx.Done()
	sctx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	return reg.Close(sctx)
}

// serveS3 is `demo serve-s3 --addr 10.244.0.1:PORT`: gofakes3 holding the
// demo model, until SIGTERM.
func serveS3(args []string) error {
	fs := flag.NewFlagSet(s3Command, flag.ExitOnError)
	addr := fs.String("addr", bridgeGateway+":0", "address to serve on")
	_ = fs.Parse(args)
	backend := s3mem.New()
	if err := backend.CreateBucket(servedBucket); err != nil {
		return err
	}
	model := demoModel()
	for _, p := range model.Paths() {
		if _, err := backend.PutObject(servedBucket, servedPrefix+"/"+p, map[string]string{}, bytes.NewReader(model[p]), int64(len(model[p])), nil); err != nil {
			return err
		}
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gofakes3.New(backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("s3: serving s3://%s/%s (%d files, %d bytes) at http://%s\n", servedBucket, servedPrefix, len(model), model.Size(), l.Addr())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startHelper starts `<this binary> args...` detached, logging to
// logs/<name>.log, and returns it for the state file.
func startHelper(c *cluster.Cluster, name string, args ...string) (cluster.StateProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return cluster.StateProcess{}, err
	}
	logf, err := os.Create(filepath.Join(c.Dir(), "logs", name+".log"))
	if err != nil {
		return cluster.StateProcess{}, err
	}
	defer logf.Close()
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return cluster.StateProcess{}, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return cluster.StateProcess{Name: name, PID: pid, Binary: self}, nil
}

// served is what serveOnRealNode reports.
type served struct {
	pod      *corev1.Pod
	url      string
	answer   []byte
	loadLine string        // the loader's one-line summary
	ready    time.Duration // from kubectl apply to Ready
}

// serveOnRealNode runs the served model on the real node: GPUs for it
// (a node agent with two fake 16Gi GPUs), the loader and model server
// images, the S3 helper, the Secret and the Deployment (applied with the
// real kubectl); it waits until the server answers.
func serveOnRealNode(ctx context.Context, c *cluster.Cluster, root string, logf func(string, ...any)) (*served, []cluster.StateProcess, error) {
	node := c.RealNodeName()
	if err := c.StartNodeAgent(ctx, node, "2x16Gi"); err != nil {
		return nil, nil, err
	}
	logf("demo: building the model-loader and model-server images for the real node")
	images, err := imagebuild.Select([]string{"model-loader", "examples/model-server"})
	if err != nil {
		return nil, nil, err
	}
	built, err := imagebuild.Build(ctx, images, imagebuild.Options{Dir: root,
		Platforms: []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}})
	if err != nil {
		return nil, nil, err
	}
	var serverRef string
	for _, b := range built {
		if err := c.PushIndexRef(ctx, b.Refs[0], b.Index); err != nil {
			return nil, nil, err
		}
		if b.Image.Name == "examples/model-server" {
			serverRef = b.Refs[0]
		}
	}
	if built[0].Refs[0] != mutate.DefaultLoaderImage && built[1].Refs[0] != mutate.DefaultLoaderImage {
		return nil, nil, fmt.Errorf("the webhook injects %s; make images built %s and %s", mutate.DefaultLoaderImage, built[0].Refs[0], built[1].Refs[0])
	}

	l, err := net.Listen("tcp", bridgeGateway+":0")
	if err != nil {
		return nil, nil, fmt.Errorf("the real node's bridge: %w", err)
	}
	s3Addr := l.Addr().String()
	l.Close()
	helper, err := startHelper(c, "s3", s3Command, "--addr="+s3Addr)
	if err != nil {
		return nil, nil, err
	}
	helpers := []cluster.StateProcess{helper}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		conn, err := net.Dial("tcp", s3Addr)
		if err == nil {
			conn.Close()
		}
		return err == nil, nil
	}); err != nil {
		return nil, helpers, fmt.Errorf("the S3 helper did not start (logs/s3.log): %w", err)
	}

	manifest := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: demo-s3
  namespace: %s
stringData:
  AWS_ACCESS_KEY_ID: demo
  AWS_SECRET_ACCESS_KEY: demo-secret
  AWS_ENDPOINT_URL_S3: http://%s
  AWS_REGION: us-east-1
---
`, demoNamespace, s3Addr) + cluster.ModelServerDeployment{Name: servedName, Namespace: demoNamespace,
		ModelURI: "s3://" + servedBucket + "/" + servedPrefix, ModelSecret: "demo-s3", GPUMemory: servedGPUMem, Image: serverRef}.YAML()
	applied := time.Now()
	cmd := exec.CommandContext(ctx, c.Bin("kubectl"), "--kubeconfig", c.Kubeconfig(), "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, helpers, err
	}
	cs := c.Client()
	out := &served{}
	var why string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(demoNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + servedName})
		if err != nil || len(list.Items) != 1 {
			why = fmt.Sprintf("%d pods, %v", len(list.Items), err)
			return false, nil
		}
		p := &list.Items[0]
		for _, s := range p.Status.InitContainerStatuses {
			if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
				return false, fmt.Errorf("the model loader exited %d: %s", t.ExitCode, t.Message)
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				out.pod, out.ready = p, time.Since(applied)
				return true, nil
			}
		}
		why = fmt.Sprintf("pod %s: %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName)
		return false, nil
	})
	if err != nil {
		return nil, helpers, fmt.Errorf("the served model: %w (last: %s)", err, why)
	}
	logs, err := cs.CoreV1().Pods(demoNamespace).GetLogs(out.pod.Name, &corev1.PodLogOptions{Container: mutate.LoaderContainerName}).DoRaw(ctx)
	if err == nil {
		lines := strings.Split(strings.TrimSpace(string(logs)), "\n")
		out.loadLine = lines[len(lines)-1]
		// without klog's header ("I1129 22:28:25.045307 1 engine.go:232] ")
		if _, msg, ok := strings.Cut(out.loadLine, "] "); ok {
			out.loadLine = msg
		}
	}
	out.url = "http://" + net.JoinHostPort(out.pod.Status.PodIP, "8080") + "/"
	resp, err := http.Get(out.url)
	if err != nil {
		return nil, helpers, err
	}
	defer resp.Body.Close()
	if out.answer, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
		return nil, helpers, err
	}
	return out, helpers, nil
}

// printServed prints the served model: where, how fast, and its answer.
func printServed(w io.Writer, s *served) {
	fmt.Fprintf(w, "\nOne model served on the real node %s (pod %s/%s, GPUs %s):\n",
		s.pod.Spec.NodeName, s.pod.Namespace, s.pod.Name, s.pod.Annotations[api.AnnotationGPUIDs])
	fmt.Fprintf(w, "  from kubectl apply to Ready: %s\n", s.ready.Round(10*time.Millisecond))
	if s.loadLine != "" {
		fmt.Fprintf(w, "  the loader: %s\n", s.loadLine)
	}
	fmt.Fprintf(w, "  GET %s answered:\n%s\n", s.url, indent(string(s.answer), "    "))
	fmt.Fprintf(w, "Ask it yourself: curl -s %s\n", s.url)
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}
