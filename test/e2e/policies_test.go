package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/mutate"
)

// TestWebhookNamespacePolicies (issue 14 kind 8): in a namespace whose
// ResourceQuota counts limits.cpu, the real quota admission requires every
// container to set it. The loader the built-in config adds sets none: the
// webhook denies the pod saying so (the quota would refuse it with a
// message that does not name mlplane). With a LimitRange default, the
// loader gets the limit as the LimitRanger would have given it, the pod is
// accepted, and it equals the pod created from `webhook inject`'s output,
// whose loader the LimitRanger itself defaults.
func TestWebhookNamespacePolicies(t *testing.T) {
	f := features.New("a namespace whose ResourceQuota requires cpu limits").
		WithLabel("component", "webhook").
		Assess("denied without a LimitRange default, accepted and as offline with one", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Webhook)
			cs := quietClientset(t, cfg)
			ns := optedInNamespace(ctx, t, cfg, cs, "quota")
			cpu := resource.MustParse("2")
			pod := modelPod(ns, "quota", nil)
			pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: resource.MustParse("8Gi")}
			quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "compute", Namespace: ns},
				Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceLimitsCPU: resource.MustParse("100")}}}
			if _, err := cs.CoreV1().ResourceQuotas(ns).Create(ctx, quota, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			want := `admission webhook "namespace.inject.mlplane.io" denied the request: annotation mlplane.io/model-uri: the model loader: container "mlplane-model-loader" sets no limits.cpu, which ResourceQuota "compute" of namespace ` + ns + ` requires of every container (it counts limits.cpu)`
			waitDryRun(ctx, t, cs, pod, func(_ *corev1.Pod, err error) string {
				if err == nil || !strings.Contains(err.Error(), want) {
					return "want the denial, got " + errString(err)
				}
				return ""
			})

			lr := &corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Name: "defaults", Namespace: ns},
				Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{Type: corev1.LimitTypeContainer,
					Default: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}}}}
			if _, err := cs.CoreV1().LimitRanges(ns).Create(ctx, lr, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			var served *corev1.Pod
			waitDryRun(ctx, t, cs, pod, func(p *corev1.Pod, err error) string {
				if err != nil {
					return err.Error()
				}
				served = p
				return ""
			})
			if lim := served.Spec.InitContainers[0].Resources.Limits[corev1.ResourceCPU]; lim.String() != "1" {
				t.Errorf("loader: limits.cpu %s, want the LimitRange's 1", lim.String())
			}

			// Offline: the namespace's LimitRange is unknown to `webhook
			// inject`; the LimitRanger applies it when the pod is created.
			m, err := mutate.New(nil, mutate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			in, _ := yaml.Marshal(pod)
			var out bytes.Buffer
			labels := map[string]string{api.LabelInject: api.NamespaceInjectEnabled, corev1.LabelMetadataName: ns}
			if err := m.Inject(bytes.NewReader(in), &out, func(string) map[string]string { return labels }, func(string) {}); err != nil {
				t.Fatal(err)
			}
			var offline corev1.Pod
			if err := yaml.Unmarshal(out.Bytes(), &offline); err != nil {
				t.Fatal(err)
			}
			offline.Name, offline.GenerateName = "", "quota-"
			created, err := dryRun(ctx, cs, &offline)
			if err != nil {
				t.Fatalf("the offline pod is refused: %v", err)
			}
			// The LimitRanger records what it set in an annotation: on the
			// offline pod only, since the served pod's loader came after it.
			const limitRanger = "kubernetes.io/limit-ranger"
			if got := created.Annotations[limitRanger]; got != "LimitRanger plugin set: cpu limit for init container mlplane-model-loader" {
				t.Errorf("offline %s = %q", limitRanger, got)
			}
			delete(created.Annotations, limitRanger)
			if d := cmp.Diff(comparable(served), comparable(created)); d != "" {
				t.Errorf("served and offline pods differ (-served +offline):\n%s", d)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// waitDryRun creates pod with dry run until check, given the result,
// returns "" (the webhook sees new LimitRanges and ResourceQuotas through
// an informer, a moment after they are created).
func waitDryRun(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod *corev1.Pod, check func(*corev1.Pod, error) string) {
	t.Helper()
	var last string
	err := wait.For(func(ctx context.Context) (bool, error) {
		p, err := dryRun(ctx, cs, pod.DeepCopy())
		last = check(p, err)
		return last == "", nil
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatalf("pod %s/%s: %v (last: %s)", pod.Namespace, pod.Name, err, last)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// TestWebhookEphemeralContainers (issue 14 kind 8): a debugging container
// added to a running GPU pod (kubectl debug: an update of the
// pods/ephemeralcontainers subresource) gets NVIDIA_VISIBLE_DEVICES=void
// from the webhook, so that a CUDA image does not see every GPU of the node.
func TestWebhookEphemeralContainers(t *testing.T) {
	f := features.New("kubectl debug of a GPU pod").
		WithLabel("component", "webhook").
		Assess("the ephemeral container sees no GPU", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireComponent(ctx, t, cluster.Webhook)
			cs := quietClientset(t, cfg)
			ns := optedInNamespace(ctx, t, cfg, cs, "debug")
			pod, err := cs.CoreV1().Pods(ns).Create(ctx, modelPod(ns, "debugged", nil), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var debugged *corev1.Pod
			err = wait.For(func(ctx context.Context) (bool, error) {
				// Fresh each time: the extender's binding changes the pod.
				if pod, err = cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
					return false, err
				}
				pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
					EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "nvidia/cuda:12.4.1-base-ubuntu22.04",
						TerminationMessagePolicy: corev1.TerminationMessageReadFile}})
				debugged, err = cs.CoreV1().Pods(ns).UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
				return err == nil, nil
			}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond))
			if err != nil {
				t.Fatalf("adding an ephemeral container: %v", err)
			}
			env := debugged.Spec.EphemeralContainers[0].Env
			if len(env) != 1 || env[0].Name != api.EnvNvidiaVisibleDevices || env[0].Value != mutate.VisibleDevicesNone {
				t.Errorf("the ephemeral container's env is %+v, want %s=%s", env, api.EnvNvidiaVisibleDevices, mutate.VisibleDevicesNone)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
