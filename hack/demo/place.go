package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
)

// demoNamespace is the namespace examples/00-namespace.yaml creates.
const demoNamespace = "ml-demo"

// applyExamples applies the examples with the real kubectl: the namespace
// first, then (once the webhook has seen that namespace, so that no pod
// slips through unmutated) everything else.
func applyExamples(ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface, dir string, webhook bool, logf func(string, ...any)) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no examples in %s", dir)
	}
	sort.Strings(files)
	kubectl := func(args ...string) error {
		cmd := exec.CommandContext(ctx, c.Bin("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	if err := kubectl("apply", "-f", files[0]); err != nil {
		return err
	}
	if webhook {
		if err := waitWebhookSeesNamespace(ctx, cs, demoNamespace); err != nil {
			return err
		}
	}
	args := []string{"apply"}
	for _, f := range files[1:] {
		args = append(args, "-f", f)
	}
	logf("demo: applying %d examples from %s", len(files)-1, dir)
	return kubectl(args...)
}

// waitWebhookSeesNamespace polls dry-run creations until the webhook
// mutates a pod in ns.
func waitWebhookSeesNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns, Annotations: map[string]string{api.AnnotationModelURI: "hf://probe/probe"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: "probe"}}},
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && p.Annotations[api.AnnotationStatus] != "", nil
	})
}

// waitDeployments waits until every Deployment in the demo namespace has all
// its replicas available; on timeout it says which have not.
func waitDeployments(ctx context.Context, cs kubernetes.Interface, timeout time.Duration, logf func(string, ...any)) error {
	var pending []string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := cs.AppsV1().Deployments(demoNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		pending = pending[:0]
		for _, d := range list.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			if d.Status.AvailableReplicas < want {
				pending = append(pending, fmt.Sprintf("%s (%d/%d)", d.Name, d.Status.AvailableReplicas, want))
			}
		}
		return len(list.Items) > 0 && len(pending) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("deployments not available after %s: %s (see kubectl describe pods -n %s)", timeout, strings.Join(pending, ", "), demoNamespace)
	}
	logf("demo: every example Deployment is available")
	return nil
}

// printPlacement prints, per GPU, the pods the extender assigned to it
// (api.AnnotationGPUIDs). Before the extender exists no pod carries GPU
// ids, and the table shows per node what the scheduler placed there.
func printPlacement(ctx context.Context, w io.Writer, cs kubernetes.Interface, nodeNames []string) error {
	pods, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	type use struct {
		pod string
		mib int64
	}
	byGPU := map[string][]use{}  // GPU UUID -> pods
	byNode := map[string][]use{} // node -> pods (total request)
	assigned := false
	for _, p := range pods.Items {
		req, ok, err := api.GPURequestFromAnnotations(p.Annotations)
		if err != nil || !ok || p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		name := shortPodName(&p)
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], use{name, req.TotalMiB()})
		for _, id := range api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs]) {
			assigned = true
			byGPU[id] = append(byGPU[id], use{name, req.MemoryMiB})
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	sum := func(us []use) (total int64, names []string) {
		for _, u := range us {
			total += u.mib
			names = append(names, fmt.Sprintf("%s %s", u.pod, mib(u.mib)))
		}
		sort.Strings(names)
		return total, names
	}
	if !assigned {
		fmt.Fprintln(w, "\nPlacement per node (no pod carries "+api.AnnotationGPUIDs+": the extender is not running, so this is the scheduler's per-node choice):")
		fmt.Fprintln(tw, "NODE\tGPUS\tPODS\tGPU MEMORY REQUESTED / ALLOCATABLE")
	} else {
		fmt.Fprintln(w, "\nPlacement per GPU (from "+api.AnnotationGPUIDs+", written by the extender):")
		fmt.Fprintln(tw, "NODE\tGPU\tUUID\tPODS\tASSIGNED / TOTAL")
	}
	for _, n := range nodeNames {
		node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return err
		}
		gpus, err := api.DecodeInventory(node.Annotations[api.NodeAnnotationGPUs])
		if err != nil {
			return fmt.Errorf("node %s: %w", n, err)
		}
		if !assigned {
			total, names := sum(byNode[n])
			alloc := node.Status.Allocatable[corev1.ResourceName(api.ResourceGPUMemory)]
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s / %s\n", n, len(gpus), list(names), mib(total), mib(alloc.Value()))
			continue
		}
		for _, g := range gpus {
			total, names := sum(byGPU[g.UUID])
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s / %s\n", n, g.Index, shortUUID(g.UUID), list(names), mib(total), mib(g.MemoryMiB))
		}
	}
	return nil
}

// shortPodName is "<deployment>/<suffix>" for a Deployment's pod, else the
// pod name: the table stays readable.
func shortPodName(p *corev1.Pod) string {
	if rs := p.GenerateName; rs != "" && len(p.OwnerReferences) > 0 && p.OwnerReferences[0].Kind == "ReplicaSet" {
		parts := strings.Split(strings.TrimSuffix(rs, "-"), "-")
		if len(parts) > 1 {
			return strings.Join(parts[:len(parts)-1], "-") + "/" + strings.TrimPrefix(p.Name, rs)
		}
	}
	return p.Name
}

func list(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ", ")
}

func shortUUID(u string) string {
	if len(u) > 12 {
		return u[:12] + "…"
	}
	return u
}

// mib renders MiB as Gi when exact.
func mib(m int64) string {
	if m%1024 == 0 {
		return fmt.Sprintf("%dGi", m/1024)
	}
	return fmt.Sprintf("%dMi", m)
}
