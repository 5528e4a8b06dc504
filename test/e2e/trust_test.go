package e2e

// The admission policies of config/admission on the real API server (issue
// 16 item 4): the GPU annotations of a pod change only through the
// extender's ServiceAccount, and a node agent writes only its own node. The
// local cluster installs them with the extender (cluster.ExtenderConfig),
// and runs the extender as its ServiceAccount, so every burst of the other
// tests is bound under them too.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
	"github.com/mlplane/mlplane/internal/cluster"
)

// The messages of config/admission/gpu-assignment.yaml.
const (
	policyGPU       = "mlplane-gpu-assignment"
	policyNodeAgent = "mlplane-node-agent"
	msgGPUIDs       = "annotation mlplane.io/gpu-ids is written only by the mlplane extender, in the pod's Binding: it names the GPUs the pod's memory is booked on, and no one else may add, change or remove it"
	msgGPURequest   = "annotations mlplane.io/gpu-memory and mlplane.io/gpu-count are fixed when the pod is created (its containers' mlplane.io/gpu-memory requests were set from them and cannot change): create a new pod to ask for other GPUs"
	msgNoNode       = "the mlplane node agent must use the ServiceAccount token mounted into its pod, which names its node: this token names no node"
)

// denied checks that err is the API server's refusal by policy with msg.
func denied(t *testing.T, what string, err error, policy, msg string) {
	t.Helper()
	want := fmt.Sprintf("ValidatingAdmissionPolicy '%s' with binding '%s' denied request: %s", policy, policy, msg)
	if !apierrors.IsForbidden(err) || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("%s: got %v, want Forbidden ending %q", what, err, want)
	}
}

// allowed checks that err is nil.
func allowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v, want it allowed", what, err)
	}
}

// mergePatch is a JSON merge patch of metadata.annotations.
func mergePatch(ann map[string]any) []byte {
	var b strings.Builder
	b.WriteString(`{"metadata":{"annotations":{`)
	first := true
	for k, v := range ann {
		if !first {
			b.WriteString(",")
		}
		first = false
		if v == nil {
			fmt.Fprintf(&b, "%q:null", k)
		} else {
			fmt.Fprintf(&b, "%q:%q", k, v)
		}
	}
	b.WriteString("}}}")
	return []byte(b.String())
}

func kubeconfigClient(t *testing.T, path string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// waitPolicyActive waits until the API server enforces policy name (a
// policy is compiled a moment after it is stored): probe, run as a dry
// run, is refused. It fails the test when the policy reports type
// checking warnings.
func waitPolicyActive(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, probe func(context.Context) error) {
	t.Helper()
	var last error
	err := wait.For(func(ctx context.Context) (bool, error) {
		last = probe(ctx)
		return apierrors.IsForbidden(last) && strings.Contains(last.Error(), "ValidatingAdmissionPolicy '"+name+"'"), nil
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatalf("policy %s not enforced: %v (last answer: %v)", name, err, last)
	}
	p, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tc := p.Status.TypeChecking; tc != nil && len(tc.ExpressionWarnings) > 0 {
		t.Errorf("policy %s: type checking warnings %+v", name, tc.ExpressionWarnings)
	}
}

func TestAdmissionPolicies(t *testing.T) {
	gpu := features.New("only the extender writes a pod's GPU assignment").
		Assess("edits by a user who may update pods are refused with the policy's message; the extender's Binding is not", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender) // it installs the policies
			admin := Clientset(t, cfg)
			ns := CreateNamespace(ctx, t, cfg, "trust", nil)

			// A user who may do anything to pods in ns, their status and
			// Binding included (RBAC lets them; the policy must not).
			const editorName = "e2e-pod-editor"
			if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
				ObjectMeta: metav1.ObjectMeta{Name: editorName},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "pods/status", "pods/binding"},
					Verbs: []string{"get", "list", "create", "update", "patch", "delete"}}},
			}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: editorName},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: editorName},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: editorName}},
			}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			ecfg := rest.CopyConfig(c.RESTConfig())
			ecfg.Impersonate = rest.ImpersonationConfig{UserName: editorName, Groups: []string{"system:authenticated"}}
			editor, err := kubernetes.NewForConfig(ecfg)
			if err != nil {
				t.Fatal(err)
			}
			// The extender's ServiceAccount with the shipped RBAC.
			extender := saClient(ctx, t, c, api.DefaultNamespace, cluster.ExtenderServiceAccount, "")

			pod := func(name string, ann map[string]string) *corev1.Pod {
				return &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
					// No scheduler places it: the test binds it.
					Spec: corev1.PodSpec{SchedulerName: "e2e-nobody", Containers: []corev1.Container{{Name: "c", Image: "registry.example/server:fake"}}},
				}
			}
			dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
			waitPolicyActive(ctx, t, admin, policyGPU, func(ctx context.Context) error {
				_, err := editor.CoreV1().Pods(ns).Create(ctx, pod("probe", map[string]string{api.AnnotationGPUIDs: "GPU-x"}), dryRun)
				return err
			})

			// Creation: the request is the user's to make, the assignment is not.
			_, err = editor.CoreV1().Pods(ns).Create(ctx, pod("handmade", map[string]string{api.AnnotationGPUMemory: "20Gi", api.AnnotationGPUIDs: "GPU-x"}), metav1.CreateOptions{})
			denied(t, "create with gpu-ids", err, policyGPU, msgGPUIDs)
			_, err = editor.CoreV1().Pods(ns).Create(ctx, pod("p", map[string]string{api.AnnotationGPUMemory: "20Gi", api.AnnotationGPUCount: "1"}), metav1.CreateOptions{})
			allowed(t, "create with gpu-memory and gpu-count", err)

			patch := func(cs kubernetes.Interface, ann map[string]any) error {
				_, err := cs.CoreV1().Pods(ns).Patch(ctx, "p", types.MergePatchType, mergePatch(ann), metav1.PatchOptions{})
				return err
			}
			bind := func(cs kubernetes.Interface, node string, ann map[string]string) error {
				return cs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
					ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns, Annotations: ann},
					Target:     corev1.ObjectReference{Kind: "Node", Name: node},
				}, metav1.CreateOptions{})
			}
			node := c.NodeNames()[0]
			const ids = "GPU-e2e-trust-0"

			// Before the bind.
			denied(t, "adding gpu-ids to a pending pod", patch(editor, map[string]any{api.AnnotationGPUIDs: ids}), policyGPU, msgGPUIDs)
			denied(t, "changing gpu-memory of a pending pod", patch(editor, map[string]any{api.AnnotationGPUMemory: "10Gi"}), policyGPU, msgGPURequest)
			denied(t, "a Binding with gpu-ids by the user", bind(editor, node, map[string]string{api.AnnotationGPUIDs: ids}), policyGPU, msgGPUIDs)
			denied(t, "a Binding with gpu-memory by the user", bind(editor, node, map[string]string{api.AnnotationGPUMemory: "1Mi"}), policyGPU, msgGPURequest)

			// The extender's own write: the Binding carrying gpu-ids.
			allowed(t, "the extender's Binding with gpu-ids", bind(extender, node, map[string]string{api.AnnotationGPUIDs: ids}))
			p, err := admin.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Spec.NodeName != node || p.Annotations[api.AnnotationGPUIDs] != ids {
				t.Fatalf("after the extender's Binding: node %q, gpu-ids %q; want %s, %s", p.Spec.NodeName, p.Annotations[api.AnnotationGPUIDs], node, ids)
			}

			// After the bind.
			denied(t, "changing gpu-ids", patch(editor, map[string]any{api.AnnotationGPUIDs: "GPU-e2e-trust-1"}), policyGPU, msgGPUIDs)
			denied(t, "removing gpu-ids", patch(editor, map[string]any{api.AnnotationGPUIDs: nil}), policyGPU, msgGPUIDs)
			denied(t, "removing gpu-ids as cluster admin", patch(admin, map[string]any{api.AnnotationGPUIDs: nil}), policyGPU, msgGPUIDs)
			denied(t, "shrinking gpu-memory", patch(editor, map[string]any{api.AnnotationGPUMemory: "1Gi"}), policyGPU, msgGPURequest)
			denied(t, "removing gpu-memory", patch(editor, map[string]any{api.AnnotationGPUMemory: nil}), policyGPU, msgGPURequest)
			denied(t, "adding gpu-count", patch(editor, map[string]any{api.AnnotationGPUCount: "2"}), policyGPU, msgGPURequest)
			// pods/status may change metadata too.
			err = retry.RetryOnConflict(retry.DefaultRetry, func() error { // KWOK writes the status too
				cur, err := editor.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
				if err != nil {
					return err
				}
				cur.Annotations[api.AnnotationGPUIDs] = "GPU-e2e-trust-1"
				_, err = editor.CoreV1().Pods(ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
				return err
			})
			denied(t, "changing gpu-ids through pods/status", err, policyGPU, msgGPUIDs)
			allowed(t, "another annotation", patch(editor, map[string]any{"e2e.mlplane.io/note": "edited"}))

			// The kubelet's (KWOK's) status updates pass: the pod runs.
			WaitPods(ctx, t, admin, ns, "", 1, LongWait, PodRunning)
			p, err = admin.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Annotations[api.AnnotationGPUIDs] != ids || p.Annotations[api.AnnotationGPUMemory] != "20Gi" {
				t.Errorf("running pod: gpu-ids %q, gpu-memory %q; want %s, 20Gi", p.Annotations[api.AnnotationGPUIDs], p.Annotations[api.AnnotationGPUMemory], ids)
			}
			return ctx
		}).
		Feature()

	agent := features.New("a node agent writes only its own node").
		Assess("with its pod's token an agent writes its Node and Lease, not another node's", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			admin := Clientset(t, cfg)
			nodes := c.NodeNames()
			if len(nodes) < 2 {
				t.Fatalf("need two GPU nodes, have %v", nodes)
			}
			own, other := nodes[0], nodes[1]
			if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: api.NodeAgentNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			if err := c.ApplyConfig(ctx, "rbac/node-agent.yaml"); err != nil {
				t.Fatal(err)
			}
			// The agent's pod on its node, as the DaemonSet makes it; the
			// token is bound to it as the kubelet's is.
			agentPod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "e2e-agent-" + own, Namespace: api.NodeAgentNamespace},
				Spec: corev1.PodSpec{NodeName: own, ServiceAccountName: nodeAgentSA,
					Containers: []corev1.Container{{Name: "agent", Image: "registry.example/node-agent:fake"}}},
			}
			if _, err := admin.CoreV1().Pods(api.NodeAgentNamespace).Create(ctx, agentPod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				zero := int64(0)
				_ = admin.CoreV1().Pods(api.NodeAgentNamespace).Delete(context.Background(), agentPod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
				_, _ = admin.CoreV1().Nodes().Patch(context.Background(), own, types.MergePatchType, mergePatch(map[string]any{"e2e.mlplane.io/probe": nil}), metav1.PatchOptions{})
			})
			agentCS := saClient(ctx, t, c, api.NodeAgentNamespace, nodeAgentSA, agentPod.Name)
			unbound := saClient(ctx, t, c, api.NodeAgentNamespace, nodeAgentSA, "")

			probe := mergePatch(map[string]any{"e2e.mlplane.io/probe": "agent"})
			patchNode := func(cs kubernetes.Interface, name string, sub ...string) error {
				_, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, probe, metav1.PatchOptions{}, sub...)
				return err
			}
			waitPolicyActive(ctx, t, admin, policyNodeAgent, func(ctx context.Context) error {
				_, err := agentCS.CoreV1().Nodes().Patch(ctx, other, types.MergePatchType, probe, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
				return err
			})
			wrongNode := fmt.Sprintf("the mlplane node agent on node %s may write only Node %s, not %s", own, own, other)
			allowed(t, "its own Node", patchNode(agentCS, own))
			denied(t, "another Node", patchNode(agentCS, other), policyNodeAgent, wrongNode)
			denied(t, "another Node's status", patchNode(agentCS, other, "status"), policyNodeAgent, wrongNode)
			denied(t, "its own Node with a token bound to no pod", patchNode(unbound, own), policyNodeAgent, msgNoNode)

			leases := agentCS.CoordinationV1().Leases(api.LeaseNamespace)
			renew := func(node string) error {
				return retry.RetryOnConflict(retry.DefaultRetry, func() error {
					l, err := admin.CoordinationV1().Leases(api.LeaseNamespace).Get(ctx, api.LeaseName(node), metav1.GetOptions{})
					if err != nil {
						return err
					}
					_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
					return err
				})
			}
			allowed(t, "its own Lease", renew(own))
			denied(t, "another node's Lease", renew(other), policyNodeAgent,
				fmt.Sprintf("the mlplane node agent on node %s may write only Lease %s, not %s", own, api.LeaseName(own), api.LeaseName(other)))
			return ctx
		}).
		Feature()

	unguarded := features.New("without the policy, the extender keeps the booking made at bind").
		Assess("a bound pod's gpu-ids removed and gpu-memory shrunk: the next pod does not get its memory", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			admin := Clientset(t, cfg)
			node := AddNodes(ctx, t, c, "1x2x80Gi", "trust-", cluster.PublishInProcess)[0]
			// A cluster where the policy was never installed (or removed).
			bindings := admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings()
			if err := bindings.Delete(ctx, policyGPU, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := c.ApplyConfig(context.Background(), "admission/gpu-assignment.yaml"); err != nil {
					t.Error(err)
				}
			})
			ns := CreateNamespace(ctx, t, cfg, "unguarded", nil)
			// The binding's removal takes effect a moment later.
			if err := wait.For(func(ctx context.Context) (bool, error) {
				_, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: "probe", Annotations: map[string]string{api.AnnotationGPUIDs: "GPU-x"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
				}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				return err == nil, nil
			}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond)); err != nil {
				t.Fatalf("policy still enforced after its binding was deleted: %v", err)
			}

			// Two GPUs of 80 GiB: the scheduler's own check of the node's
			// total (160 GiB) lets 120 GiB through, only the extender's
			// per-GPU booking can refuse it. a: 60 GiB on GPU 0.
			create := func(name string, gi int64) {
				t.Helper()
				if _, err := admin.CoreV1().Pods(ns).Create(ctx, onNode(gpuPodSpec(ns, name, name, gi, 1), node), metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			create("a", 60)
			a := waitBound(ctx, t, admin, ns, "a")
			gpu0, gpu1 := cluster.FakeUUID(node, 0), cluster.FakeUUID(node, 1)
			if got := a.Annotations[api.AnnotationGPUIDs]; got != gpu0 {
				t.Fatalf("pod a: gpu-ids %q, want %s", got, gpu0)
			}
			// Edits the policy would refuse: the booking would drop to
			// nothing (no gpu-ids), then to 1 GiB (gpu-ids back, shrunk).
			for _, edit := range []map[string]any{
				{api.AnnotationGPUIDs: nil},
				{api.AnnotationGPUIDs: gpu0, api.AnnotationGPUMemory: "1Gi"},
			} {
				if _, err := admin.CoreV1().Pods(ns).Patch(ctx, "a", types.MergePatchType, mergePatch(edit), metav1.PatchOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			// b: 60 GiB. Binpacking onto GPU 0 as the edits say (79 GiB
			// free) would put 120 GiB there; the booking at bind leaves it
			// 20 GiB, so b gets GPU 1.
			create("b", 60)
			if got := waitBound(ctx, t, admin, ns, "b").Annotations[api.AnnotationGPUIDs]; got != gpu1 {
				t.Errorf("pod b: gpu-ids %q, want %s (GPU 0 holds pod a's 60 GiB)", got, gpu1)
			}
			// c: 30 GiB fits the node's total (150 of 160) but no GPU.
			create("c", 30)
			waitUnschedulable(ctx, t, admin, ns, "c", "largest free GPU has 20480 MiB, pod needs 30720 MiB per GPU on 1 GPU")
			log, err := os.ReadFile(c.LogPath(cluster.Extender))
			if err != nil {
				t.Fatal(err)
			}
			if want := "bound pod's GPU annotations were changed; its booking stays as fixed at bind"; !strings.Contains(string(log), want) {
				t.Errorf("extender log lacks %q", want)
			}
			return ctx
		}).
		Feature()

	calls := features.New("only the scheduler may call the extender").
		Assess("over TLS the scheduler's client certificate is served and a client without it is refused", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Extender)
			// What anyone who can reach the extender could try: a bind of
			// any pending pod to any node, with the extender's RBAC.
			bind := func(tlsCfg *tls.Config) (*http.Response, error) {
				body := `{"podName":"any","podNamespace":"any","podUID":"x","node":"any"}`
				hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
				resp, err := hc.Post(c.ExtenderURL()+"/bind", "application/json", strings.NewReader(body))
				if err == nil {
					resp.Body.Close()
				}
				return resp, err
			}
			scheduler, err := c.ExtenderClientTLS(true)
			if err != nil {
				t.Fatal(err)
			}
			if resp, err := bind(scheduler); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("with the scheduler's certificate: %v %v, want an answer", resp, err)
			}
			anonymous, err := c.ExtenderClientTLS(false)
			if err != nil {
				t.Fatal(err)
			}
			if resp, err := bind(anonymous); err == nil {
				t.Errorf("without a client certificate: HTTP %d, want the connection refused", resp.StatusCode)
			} else {
				t.Logf("without a client certificate: %v", err)
			}
			// A client certificate of the right name from another CA.
			other, err := certs.Issue(certs.CACertificate(api.DefaultNamespace), nil)
			if err != nil {
				t.Fatal(err)
			}
			forged, err := certs.Issue(certs.ExtenderClientCertificate(api.DefaultNamespace), other)
			if err != nil {
				t.Fatal(err)
			}
			pair, err := tls.X509KeyPair(forged.CertPEM, forged.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			anonymous.Certificates = []tls.Certificate{pair}
			if resp, err := bind(anonymous); err == nil {
				t.Errorf("with a certificate from another CA: HTTP %d, want the connection refused", resp.StatusCode)
			}
			// Plain HTTP gets nowhere near the verbs.
			if resp, err := http.Post(strings.Replace(c.ExtenderURL(), "https://", "http://", 1)+"/bind", "application/json", strings.NewReader("{}")); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("plain HTTP: %d, want 400", resp.StatusCode)
				}
			}
			return ctx
		}).
		Feature()

	testenv.Test(t, gpu, agent, unguarded, calls)
}

// nodeAgentSA is the node agent's ServiceAccount (config/rbac/node-agent.yaml).
const nodeAgentSA = "mlplane-node-agent"

// saClient is a client of ServiceAccount ns/name, with a token bound to
// pod boundPod when set (see cluster.ServiceAccountKubeconfig).
func saClient(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, name, boundPod string) kubernetes.Interface {
	t.Helper()
	path, err := c.ServiceAccountKubeconfig(ctx, ns, name, boundPod, fmt.Sprintf("e2e-%s-%s-%s.kubeconfig", ns, name, boundPod), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfigClient(t, path)
}
