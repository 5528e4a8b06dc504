package install

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/test/e2e"
)

type installedKey struct{}

// installMlplane is the suite's second setup step: cluster.Install with
// config/overlays/local, on the real node.
func installMlplane(ctx context.Context, _ *envconf.Config) (context.Context, error) {
	c := e2e.Local(ctx)
	if c == nil || c.RealNodeName() == "" {
		return ctx, nil
	}
	in, err := c.Install(ctx, cluster.InstallOptions{})
	if err != nil {
		c.DumpLogs(os.Stderr, 40)
		return ctx, err
	}
	fmt.Fprintf(os.Stderr, "%s install: %d objects; images built and pushed in %s, applied in %s, rolled out in %s: %s\n",
		time.Now().Format("15:04:05.000"), in.Objects, in.Built.Round(time.Millisecond), in.Applied.Round(time.Millisecond),
		in.RolledOut.Round(time.Millisecond), strings.Join(in.Workloads, ", "))
	return context.WithValue(ctx, installedKey{}, in), nil
}

// requireInstalled returns the cluster mlplane was installed on, or skips
// without a real node.
func requireInstalled(ctx context.Context, t *testing.T) (*cluster.Cluster, *cluster.Installed) {
	t.Helper()
	c := e2e.RequireRealNode(ctx, t)
	in, _ := ctx.Value(installedKey{}).(*cluster.Installed)
	if in == nil {
		t.Fatal("mlplane was not installed")
	}
	return c, in
}

// ourPods are the pods of mlplane's two namespaces.
func ourPods(ctx context.Context, t *testing.T, cfg *envconf.Config) []corev1.Pod {
	t.Helper()
	cs := e2e.Clientset(t, cfg)
	var out []corev1.Pod
	for _, ns := range []string{api.DefaultNamespace, api.NodeAgentNamespace} {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, list.Items...)
	}
	return out
}

func TestInstall(t *testing.T) {
	running := features.New("config/overlays/local runs as pods on the real node").
		Assess("every pod of mlplane runs on the real node, Ready through its probes, never restarted", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c, in := requireInstalled(ctx, t)
			pods := ourPods(ctx, t, cfg)
			// webhook x2, extender x2, mlplane-scheduler, node agent,
			// metrics-apiserver x2
			if len(pods) != 8 {
				t.Errorf("%d pods in mlplane's namespaces, want 8", len(pods))
			}
			for _, p := range pods {
				if p.Spec.NodeName != c.RealNodeName() || p.Status.Phase != corev1.PodRunning {
					t.Errorf("pod %s/%s: %s on %q, want Running on %s", p.Namespace, p.Name, p.Status.Phase, p.Spec.NodeName, c.RealNodeName())
				}
				for _, s := range p.Status.ContainerStatuses {
					if !s.Ready || s.RestartCount != 0 {
						t.Errorf("pod %s/%s container %s: ready %t, %d restarts", p.Namespace, p.Name, s.Name, s.Ready, s.RestartCount)
					}
				}
				probed := true
				for _, ctr := range p.Spec.Containers {
					probed = probed && ctr.ReadinessProbe != nil && ctr.LivenessProbe != nil
				}
				if !probed {
					t.Errorf("pod %s/%s has no readiness and liveness probes", p.Namespace, p.Name)
				}
			}
			t.Logf("%d objects applied; images %s built and pushed in %s, applied in %s, rolled out in %s",
				in.Objects, strings.Join(in.Images, ", "), in.Built.Round(time.Millisecond), in.Applied.Round(time.Millisecond), in.RolledOut.Round(time.Millisecond))
			return ctx
		}).
		Assess("mlplane-system enforces Pod Security restricted: our pods pass it, a pod without the restricted securityContext is refused", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			requireInstalled(ctx, t)
			cs := e2e.Clientset(t, cfg)
			ns, err := cs.CoreV1().Namespaces().Get(ctx, api.DefaultNamespace, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
				t.Fatalf("%s enforce=%q, want restricted", api.DefaultNamespace, got)
			}
			// A plain pod: may run as root, escalate, keep capabilities.
			plain := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "unrestricted"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: cluster.PodbinImage}}},
			}
			_, err = cs.CoreV1().Pods(api.DefaultNamespace).Create(ctx, plain, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) {
				t.Fatalf("a plain pod in %s: %v; want forbidden, violates PodSecurity \"restricted:latest\"", api.DefaultNamespace, err)
			}
			return ctx
		}).
		Assess("the extender's Service selects the leader only; the webhook's CA is in its configuration", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			requireInstalled(ctx, t)
			cs := e2e.Clientset(t, cfg)
			var leaders []string
			var endpoints []string
			err := wait.For(func(ctx context.Context) (bool, error) {
				leaders, endpoints = nil, nil
				pods, err := cs.CoreV1().Pods(api.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: api.LabelExtenderLeader + "=true"})
				if err != nil {
					return false, err
				}
				for _, p := range pods.Items {
					leaders = append(leaders, p.Name)
				}
				slices, err := cs.DiscoveryV1().EndpointSlices(api.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=mlplane-extender"})
				if err != nil {
					return false, err
				}
				for _, s := range slices.Items {
					for _, e := range s.Endpoints {
						if e.TargetRef != nil {
							endpoints = append(endpoints, e.TargetRef.Name)
						}
					}
				}
				return len(leaders) == 1 && len(endpoints) == 1 && endpoints[0] == leaders[0], nil
			}, wait.WithContext(ctx), wait.WithTimeout(e2e.ShortWait), wait.WithInterval(200*time.Millisecond))
			if err != nil {
				t.Fatalf("leader pods %v, Service endpoints %v; want the one leader", leaders, endpoints)
			}
			mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "mlplane-webhook", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range mwc.Webhooks {
				if len(w.ClientConfig.CABundle) == 0 || w.ClientConfig.Service == nil {
					t.Errorf("webhook %s: service %v, caBundle %d bytes", w.Name, w.ClientConfig.Service, len(w.ClientConfig.CABundle))
				}
			}
			return ctx
		}).Feature()

	customMetrics := features.New("the custom metrics API of the installed mlplane").
		Assess("the aggregator reaches the metrics-apiserver pods through their Service with the CA they put in the APIServices", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			requireInstalled(ctx, t)
			// No pod uses the node's fake GPUs: an empty list, but one that
			// went through the aggregator, the pods' TLS and their
			// delegated authentication and authorization.
			path := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + api.DefaultNamespace + "/pods/*/gpu_utilization"
			var out string
			var last error
			if err := wait.For(func(ctx context.Context) (bool, error) {
				out, last = e2e.Kubectl(ctx, cfg, "", "get", "--raw", path)
				return last == nil, nil
			}, wait.WithContext(ctx), wait.WithTimeout(e2e.LongWait), wait.WithInterval(time.Second)); err != nil {
				t.Fatalf("kubectl get --raw %s: %v", path, last)
			}
			if !strings.Contains(out, `"kind":"MetricValueList"`) {
				t.Errorf("kubectl get --raw %s: %s", path, out)
			}
			return ctx
		}).Feature()

	served := features.New("a model served through the installed mlplane").
		Assess("the API server calls the webhook pods through their Service, the mlplane-scheduler pod binds through the extender pod, the loader fetches, the server answers", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c, _ := requireInstalled(ctx, t)
			serverRef, err := c.PushImage(ctx, e2e.ModelServerRepoTag, e2e.BuildImage(ctx, t, "examples/model-server"))
			if err != nil {
				t.Fatal(err)
			}
			e2e.AssessModelServed(ctx, t, cfg, c, serverRef)
			return ctx
		}).Feature()

	rbac := features.New("each ServiceAccount may do what its component needs, and no more").
		Assess("kubectl auth can-i as each ServiceAccount", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			requireInstalled(ctx, t)
			sa := func(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }
			for _, tc := range []struct {
				as   string
				verb []string
				want string
			}{
				{sa(api.DefaultNamespace, "mlplane-webhook"), []string{"get", "secrets", "-n", "default"}, "no"},
				{sa(api.DefaultNamespace, "mlplane-webhook"), []string{"update", "secrets/mlplane-webhook-tls", "-n", api.DefaultNamespace}, "yes"},
				{sa(api.DefaultNamespace, "mlplane-webhook"), []string{"update", "secrets/other", "-n", api.DefaultNamespace}, "no"},
				{sa(api.DefaultNamespace, "mlplane-extender"), []string{"create", "pods", "--subresource=binding", "-n", "default"}, "yes"},
				{sa(api.DefaultNamespace, "mlplane-extender"), []string{"delete", "pods", "-n", "default"}, "no"},
				{sa(api.DefaultNamespace, "mlplane-extender"), []string{"patch", "pods", "-n", "default"}, "no"},
				{sa(api.NodeAgentNamespace, "mlplane-node-agent"), []string{"patch", "nodes/status"}, "yes"},
				{sa(api.NodeAgentNamespace, "mlplane-node-agent"), []string{"update", "leases", "-n", api.LeaseNamespace}, "yes"},
				{sa(api.NodeAgentNamespace, "mlplane-node-agent"), []string{"create", "pods", "-n", "default"}, "no"},
				{sa(api.NodeAgentNamespace, "mlplane-node-agent"), []string{"get", "secrets", "-n", api.DefaultNamespace}, "no"},
				{sa(api.DefaultNamespace, "mlplane-metrics-apiserver"), []string{"watch", "pods"}, "yes"},
				{sa(api.DefaultNamespace, "mlplane-metrics-apiserver"), []string{"get", "pods", "-n", "default"}, "no"},
				{sa(api.DefaultNamespace, "mlplane-metrics-apiserver"), []string{"get", "secrets", "-n", "default"}, "no"},
				{sa(api.DefaultNamespace, "mlplane-metrics-apiserver"), []string{"update", "apiservices/v1beta2.custom.metrics.k8s.io"}, "yes"},
				{sa(api.DefaultNamespace, "mlplane-metrics-apiserver"), []string{"update", "apiservices/v1.apps"}, "no"},
			} {
				out, _ := e2e.Kubectl(ctx, cfg, "", append([]string{"auth", "can-i", "--as", tc.as}, tc.verb...)...)
				// the answer is the last line, after any warning
				lines := strings.Split(strings.TrimSpace(out), "\n")
				if got := lines[len(lines)-1]; got != tc.want {
					t.Errorf("%s can-i %v: %q, want %q", tc.as, tc.verb, got, tc.want)
				}
			}
			return ctx
		}).Feature()

	footprint := features.New("the real node's and mlplane's footprint").
		Assess("CPU and RSS over 10 s, idle", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c, _ := requireInstalled(ctx, t)
			programs, pods, err := c.RealNodeFootprint(ctx, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, u := range append(programs, pods...) {
				if u.RSS <= 0 {
					t.Errorf("%s: RSS %d", u.Name, u.RSS)
				}
				fmt.Fprintf(&b, "\n  %-52s CPU %5.1f%% of a core  RSS %6.1f MiB", u.Name, 100*u.CPU, float64(u.RSS)/(1<<20))
			}
			if len(pods) < 8 {
				t.Errorf("%d pods measured, want mlplane's 8 at least", len(pods))
			}
			t.Logf("footprint:%s", b.String())
			return ctx
		}).Feature()

	pdb := features.New("the webhook's PodDisruptionBudget").
		Assess("an eviction of one webhook pod is allowed, of the second at once refused; the Deployment recovers", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			requireInstalled(ctx, t)
			cs := e2e.Clientset(t, cfg)
			pods := e2e.WaitPods(ctx, t, cs, api.DefaultNamespace, "app.kubernetes.io/name=mlplane-webhook", 2, e2e.LongWait, e2e.PodRunning)
			evict := func(name string) error {
				return cs.PolicyV1().Evictions(api.DefaultNamespace).Evict(ctx, &policyv1.Eviction{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: api.DefaultNamespace}})
			}
			if err := evict(pods[0].Name); err != nil {
				t.Fatalf("evict %s: %v", pods[0].Name, err)
			}
			err := evict(pods[1].Name)
			if !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "disruption budget") {
				t.Fatalf("evict %s right after %s: %v; want 429, the disruption budget", pods[1].Name, pods[0].Name, err)
			}
			e2e.WaitPods(ctx, t, cs, api.DefaultNamespace, "app.kubernetes.io/name=mlplane-webhook", 2, e2e.LongWait, func(p *corev1.Pod) bool {
				if p.DeletionTimestamp != nil || !e2e.PodRunning(p) {
					return false
				}
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady {
						return c.Status == corev1.ConditionTrue
					}
				}
				return false
			})
			return ctx
		}).Feature()

	testenv.Test(t, running, customMetrics, rbac, served, footprint, pdb)
}
