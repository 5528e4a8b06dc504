package e2e

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
)

const (
	testModelURI     = "hf://mistralai/Mistral-7B-Instruct-v0.3"
	testModelVersion = "v0.3"
	testGPUMemory    = "20Gi"
	testGPUMemoryMiB = "20480"
	testImage        = "vllm/vllm-openai:v0.6.3" // never pulled: KWOK runs no containers
)

var injectEnabled = map[string]string{api.LabelInject: api.NamespaceInjectEnabled}

// llmDeployment is a plain apps/v1 Deployment a user would write: mlplane
// annotations on the pod template, nothing else.
func llmDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					api.AnnotationModelURI:     testModelURI,
					api.AnnotationModelVersion: testModelVersion,
					api.AnnotationGPUMemory:    testGPUMemory,
				}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: testImage}}},
			},
		},
	}
}

// modelPod is a bare Pod asking for a model and GPU memory.
func modelPod(ns, name string, annotations map[string]string) *corev1.Pod {
	ann := map[string]string{api.AnnotationModelURI: testModelURI, api.AnnotationGPUMemory: testGPUMemory}
	for k, v := range annotations {
		ann[k] = v
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: testImage}}},
	}
}

func toYAML(t *testing.T, obj any) string {
	t.Helper()
	b, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkInjected reports what the webhook should have added to a pod from
// llmDeployment or modelPod and did not.
func checkInjected(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if p.Annotations[api.AnnotationStatus] == "" {
		t.Errorf("pod %s: no %s annotation: not mutated", p.Name, api.AnnotationStatus)
		return
	}
	if p.Labels[api.LabelModel] == "" {
		t.Errorf("pod %s: no label %s", p.Name, api.LabelModel)
	}
	if v, ok := p.Annotations[api.AnnotationModelVersion]; ok {
		if p.Labels[api.LabelModelVersion] != v || p.Labels[api.LabelAppVersion] != v {
			t.Errorf("pod %s: labels %s=%q %s=%q, want %q", p.Name, api.LabelModelVersion, p.Labels[api.LabelModelVersion], api.LabelAppVersion, p.Labels[api.LabelAppVersion], v)
		}
	}
	// The loader fills a volume at api.ModelMountPath that the server
	// mounts read-only.
	var loaderVolume string
	for _, c := range p.Spec.InitContainers {
		for _, m := range c.VolumeMounts {
			if m.MountPath == api.ModelMountPath && !m.ReadOnly {
				loaderVolume = m.Name
			}
		}
	}
	if loaderVolume == "" {
		t.Errorf("pod %s: no init container writes %s: %+v", p.Name, api.ModelMountPath, p.Spec.InitContainers)
	}
	hasVolume := false
	for _, v := range p.Spec.Volumes {
		hasVolume = hasVolume || v.Name == loaderVolume
	}
	if !hasVolume {
		t.Errorf("pod %s: volume %q missing", p.Name, loaderVolume)
	}
	server := p.Spec.Containers[0]
	readOnly := false
	for _, m := range server.VolumeMounts {
		readOnly = readOnly || (m.Name == loaderVolume && m.MountPath == api.ModelMountPath && m.ReadOnly)
	}
	if !readOnly {
		t.Errorf("pod %s: server does not mount %q read-only at %s: %+v", p.Name, loaderVolume, api.ModelMountPath, server.VolumeMounts)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range server.Env {
		env[e.Name] = e
	}
	if got := env[api.EnvModelURI].Value; got != testModelURI {
		t.Errorf("pod %s: %s = %q, want %q", p.Name, api.EnvModelURI, got, testModelURI)
	}
	if env[api.EnvModelDir].Value == "" {
		t.Errorf("pod %s: %s not set", p.Name, api.EnvModelDir)
	}
	wantField := "metadata.annotations['" + api.AnnotationGPUIDs + "']"
	if vf := env[api.EnvNvidiaVisibleDevices].ValueFrom; vf == nil || vf.FieldRef == nil || vf.FieldRef.FieldPath != wantField {
		t.Errorf("pod %s: %s is not from the downward API field %s: %+v", p.Name, api.EnvNvidiaVisibleDevices, wantField, env[api.EnvNvidiaVisibleDevices])
	}
	if got := env[api.EnvGPUMemoryMiB].Value; got != testGPUMemoryMiB {
		t.Errorf("pod %s: %s = %q, want %s", p.Name, api.EnvGPUMemoryMiB, got, testGPUMemoryMiB)
	}
	for kind, rl := range map[string]corev1.ResourceList{"requests": server.Resources.Requests, "limits": server.Resources.Limits} {
		if q, ok := rl[api.ResourceGPUMemory]; !ok || q.String() != testGPUMemoryMiB {
			t.Errorf("pod %s: %s[%s] = %v, want %s", p.Name, kind, api.ResourceGPUMemory, rl[api.ResourceGPUMemory], testGPUMemoryMiB)
		}
	}
	if p.Spec.SchedulerName != api.DefaultSchedulerName {
		t.Errorf("pod %s: schedulerName %q, want %q", p.Name, p.Spec.SchedulerName, api.DefaultSchedulerName)
	}
}

// waitWebhookSeesNamespace polls dry-run pod creations in ns until one comes
// back mutated: the webhook reads namespace labels from its own cache, which
// learns of a new namespace shortly after it is created.
func waitWebhookSeesNamespace(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	var last string
	err := wait.For(func(ctx context.Context) (bool, error) {
		p, err := dryRunPod(ctx, cs, ns, "probe")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = "pod came back unmutated"
		return p.Annotations[api.AnnotationStatus] != "", nil
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatalf("the webhook never mutated a pod in %s: %v (last: %s)", ns, err, last)
	}
}

// kubectlApply runs kubectl apply with obj, as YAML, on stdin.
func kubectlApply(ctx context.Context, t *testing.T, cfg *envconf.Config, obj any) (string, error) {
	t.Helper()
	return Kubectl(ctx, cfg, toYAML(t, obj), "apply", "-f", "-")
}

// checkOutput reports each of wants that kubectl's output out lacks.
func checkOutput(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl output lacks %q:\n%s", want, out)
		}
	}
}

// dryRunPod creates modelPod(ns, name) with dry-run All: it reaches the
// webhook (sideEffects None) and stores nothing.
func dryRunPod(ctx context.Context, cs kubernetes.Interface, ns, name string) (*corev1.Pod, error) {
	return cs.CoreV1().Pods(ns).Create(ctx, modelPod(ns, name, nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

// optedInNamespace creates a namespace labelled for injection and returns
// once the webhook mutates pods in it.
func optedInNamespace(ctx context.Context, t *testing.T, cfg *envconf.Config, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	ns := CreateNamespace(ctx, t, cfg, prefix, injectEnabled)
	waitWebhookSeesNamespace(ctx, t, cs, ns)
	return ns
}

func TestWebhookKubectlApply(t *testing.T) {
	f := features.New("kubectl apply of a Deployment in an opted-in namespace").
		WithLabel("component", "webhook").
		Assess("ReplicaSet pods are mutated, the Deployment is not", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireComponent(ctx, t, cluster.Webhook)
			cs := Clientset(t, cfg)
			ns := optedInNamespace(ctx, t, cfg, cs, "inject")
			dep := llmDeployment(ns, "mistral", 2)
			if out, err := kubectlApply(ctx, t, cfg, dep); err != nil {
				t.Fatal(err)
			} else if !strings.Contains(out, "deployment.apps/mistral created") {
				t.Errorf("kubectl apply said %q", out)
			}
			pods := WaitPods(ctx, t, cs, ns, "app=mistral", 2, LongWait, PodRunning)
			c := Local(ctx)
			withExtender := c == nil || c.Running(cluster.Extender)
			for i := range pods {
				p := &pods[i]
				checkInjected(t, p)
				if len(p.OwnerReferences) == 0 || p.OwnerReferences[0].Kind != "ReplicaSet" {
					t.Errorf("pod %s was not created by a ReplicaSet: %+v", p.Name, p.OwnerReferences)
				}
				if withExtender && len(api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs])) != 1 {
					t.Errorf("pod %s: %s = %q, want one GPU assigned by the extender", p.Name, api.AnnotationGPUIDs, p.Annotations[api.AnnotationGPUIDs])
				}
			}
			got, err := cs.AppsV1().Deployments(ns).Get(ctx, "mistral", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tmpl := got.Spec.Template
			if len(tmpl.Spec.InitContainers) != 0 || len(tmpl.Spec.Volumes) != 0 || len(tmpl.Spec.Containers[0].Env) != 0 ||
				len(tmpl.Labels) != 1 || tmpl.Annotations[api.AnnotationStatus] != "" || len(tmpl.Spec.Containers[0].Resources.Limits) != 0 ||
				tmpl.Spec.SchedulerName == api.DefaultSchedulerName {
				t.Errorf("the Deployment's template was changed:\n%s", toYAML(t, tmpl))
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestWebhookUnlabelledNamespace(t *testing.T) {
	f := features.New("a Deployment in a namespace that did not opt in").
		WithLabel("component", "webhook").
		Assess("pods are unchanged and scheduled by the default scheduler", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "plain", nil)
			dep := llmDeployment(ns, "plain", 2)
			if _, err := kubectlApply(ctx, t, cfg, dep); err != nil {
				t.Fatal(err)
			}
			pods := WaitPods(ctx, t, cs, ns, "app=plain", 2, LongWait, PodRunning)
			for _, p := range pods {
				if p.Annotations[api.AnnotationStatus] != "" || len(p.Spec.InitContainers) != 0 || len(userVolumes(&p)) != 0 ||
					len(p.Spec.Containers[0].Env) != 0 || p.Labels[api.LabelModel] != "" {
					t.Errorf("pod %s was mutated:\n%s", p.Name, toYAML(t, p.Spec))
				}
				if _, ok := p.Spec.Containers[0].Resources.Requests[api.ResourceGPUMemory]; ok {
					t.Errorf("pod %s requests %s", p.Name, api.ResourceGPUMemory)
				}
				if p.Spec.SchedulerName != corev1.DefaultSchedulerName {
					t.Errorf("pod %s: schedulerName %q", p.Name, p.Spec.SchedulerName)
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestWebhookInvalidAnnotation(t *testing.T) {
	f := features.New("a Pod with an invalid annotation").
		WithLabel("component", "webhook").
		Assess("kubectl apply fails with the webhook's message", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireComponent(ctx, t, cluster.Webhook)
			cs := Clientset(t, cfg)
			ns := optedInNamespace(ctx, t, cfg, cs, "invalid")
			pod := modelPod(ns, "lots", map[string]string{api.AnnotationGPUMemory: "lots"})
			out, err := kubectlApply(ctx, t, cfg, pod)
			if err == nil {
				t.Fatalf("kubectl apply of gpu-memory=lots succeeded: %s", out)
			}
			checkOutput(t, out, "denied the request", api.AnnotationGPUMemory, `"lots"`)
			if _, err := cs.CoreV1().Pods(ns).Get(ctx, "lots", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the denied pod exists (err %v)", err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestWebhookDown(t *testing.T) {
	f := features.New("the webhook is down").
		WithLabel("component", "webhook").
		Assess("opted-in pods are refused, others created, and it works again after a restart", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Webhook)
			cs := Clientset(t, cfg)
			optedIn := optedInNamespace(ctx, t, cfg, cs, "down")
			plain := CreateNamespace(ctx, t, cfg, "up", nil)

			if err := c.StopComponent(cluster.Webhook); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { // never leave later features without a webhook
				if !c.Running(cluster.Webhook) {
					_ = c.StartComponent(context.Background(), cluster.Webhook)
				}
			})
			out, err := kubectlApply(ctx, t, cfg, modelPod(optedIn, "refused", nil))
			if err == nil {
				t.Fatalf("an opted-in pod was created with the webhook down (fail open): %s", out)
			}
			checkOutput(t, out, "failed calling webhook", "inject.mlplane.io")
			if _, err := kubectlApply(ctx, t, cfg, modelPod(plain, "elsewhere", nil)); err != nil {
				t.Errorf("a pod outside the opted-in namespaces was refused with the webhook down: %v", err)
			}
			if _, err := Kubectl(ctx, cfg, toYAML(t, modelPod(plain, "elsewhere", nil)), "get", "-f", "-"); err != nil {
				t.Errorf("the pod outside the opted-in namespaces does not exist: %v", err)
			}

			if err := c.StartComponent(ctx, cluster.Webhook); err != nil {
				t.Fatal(err)
			}
			var last error
			err = wait.For(func(ctx context.Context) (bool, error) {
				_, last = kubectlApply(ctx, t, cfg, modelPod(optedIn, "accepted", nil))
				return last == nil, nil
			}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(250*time.Millisecond))
			if err != nil {
				t.Fatalf("pods still refused after the webhook restarted: %v", last)
			}
			p, err := cs.CoreV1().Pods(optedIn).Get(ctx, "accepted", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkInjected(t, p)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestWebhookCertRotation(t *testing.T) {
	f := features.New("serving certificate rotation").
		WithLabel("component", "webhook").
		Assess("the webhook serves the new certificate and no request fails", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Webhook)
			cs := Clientset(t, cfg)
			ns := optedInNamespace(ctx, t, cfg, cs, "rotate")

			before, err := c.WebhookServingCert(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Requests flow from 4 clients for the whole rotation: dry-run
			// creations, which reach the webhook (sideEffects None) and
			// store nothing.
			var ok, failed atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						p, err := dryRunPod(ctx, cs, ns, "flow")
						switch {
						case err != nil:
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						case p.Annotations[api.AnnotationStatus] == "":
							failed.Add(1)
							firstErr.CompareAndSwap(nil, "a pod came back unmutated")
						default:
							ok.Add(1)
						}
					}
				}()
			}
			defer func() { close(stop); wg.Wait() }()
			waitCount := func(n int64) {
				t.Helper()
				target := ok.Load() + n
				if err := wait.For(func(context.Context) (bool, error) { return ok.Load() >= target || failed.Load() > 0, nil },
					wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(50*time.Millisecond)); err != nil {
					t.Fatalf("requests stalled: %d ok, %d failed", ok.Load(), failed.Load())
				}
			}
			waitCount(20)

			rotated, err := c.RotateWebhookCert()
			if err != nil {
				t.Fatal(err)
			}
			if rotated.SerialNumber.Cmp(before.SerialNumber) == 0 {
				t.Fatal("the rotation issued the same certificate")
			}
			err = wait.For(func(ctx context.Context) (bool, error) {
				cur, err := c.WebhookServingCert(ctx)
				return err == nil && cur.SerialNumber.Cmp(rotated.SerialNumber) == 0, nil
			}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(250*time.Millisecond))
			if err != nil {
				t.Fatalf("the webhook never served the rotated certificate: %v", err)
			}
			waitCount(20)
			close(stop)
			wg.Wait()
			stop = make(chan struct{}) // for the deferred close
			if n := failed.Load(); n > 0 {
				t.Errorf("%d of %d requests failed during the rotation; first: %v", n, n+ok.Load(), firstErr.Load())
			}
			t.Logf("%d requests succeeded across the rotation", ok.Load())
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// userVolumes are the pod's volumes other than the service-account token
// volume the API server's ServiceAccount admission adds to every pod.
func userVolumes(p *corev1.Pod) []corev1.Volume {
	var out []corev1.Volume
	for _, v := range p.Spec.Volumes {
		if !strings.HasPrefix(v.Name, "kube-api-access-") {
			out = append(out, v)
		}
	}
	return out
}
