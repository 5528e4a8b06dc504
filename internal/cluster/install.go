package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mlplane/mlplane/hack/images/imagebuild"
	"github.com/mlplane/mlplane/internal/manifests"
)

// LocalOverlay is the kustomization (under config/) that installs mlplane
// on the local cluster's real node: config/overlays/self-signed, with the
// node agent's fake GPU backend and every pod placed on the real node.
const LocalOverlay = "overlays/local"

// InstallOptions configure Install.
type InstallOptions struct {
	// Overlay is the kustomization to apply, relative to config/. Default
	// LocalOverlay.
	Overlay string
	// Timeout bounds the wait for every Deployment and DaemonSet to roll
	// out. Default 3 minutes.
	Timeout time.Duration
}

// Installed is what Install did.
type Installed struct {
	// Images are the images pushed to the real node's registry, by the
	// name pods use.
	Images []string
	// Objects is the number of objects applied.
	Objects int
	// Workloads are the Deployments and DaemonSets waited for, as
	// "Kind namespace/name".
	Workloads []string
	// Built, Applied and RolledOut are how long each step took.
	Built, Applied, RolledOut time.Duration
}

// Install installs mlplane on the cluster as an admin would, with the real
// node running it:
//
//  1. it builds the images config/ names for this machine's platform
//     (hack/images/imagebuild, the same code as make images) and pushes them
//     to the real node's registry under those names; an upstream image
//     whose binary make tools built (registry.k8s.io/kube-scheduler) gets a
//     one-layer image of bin/<name>, after checking that the binary's
//     version is the tag;
//  2. it renders o.Overlay with bin/kustomize and applies it with bin/kubectl
//     (server-side, field manager "mlplane-install");
//  3. it waits until every Deployment and DaemonSet it applied is rolled out
//     (all replicas updated and available).
//
// Errors name the step; a rollout that does not finish reports each
// workload's status and the events of its pods that did not start.
func (c *Cluster) Install(ctx context.Context, o InstallOptions) (*Installed, error) {
	if o.Overlay == "" {
		o.Overlay = LocalOverlay
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if c.real == nil {
		return nil, errors.New("install: the cluster has no real node to run mlplane's pods")
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	out := &Installed{}
	start := time.Now()
	rendered, err := exec.CommandContext(ctx, c.Bin("kustomize"), "build", filepath.Join(root, "config", o.Overlay)).Output()
	if err != nil {
		return nil, fmt.Errorf("install: kustomize build config/%s: %w%s", o.Overlay, err, stderrOf(err))
	}
	objs, err := manifests.Decode(rendered)
	if err != nil {
		return nil, fmt.Errorf("install: config/%s: %w", o.Overlay, err)
	}
	if out.Images, err = c.pushInstallImages(ctx, root, objs); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	out.Built = time.Since(start)

	start = time.Now()
	apply := exec.CommandContext(ctx, c.Bin("kubectl"), "--kubeconfig", c.Kubeconfig(),
		"apply", "--server-side", "--field-manager="+installFieldManager, "-f", "-")
	apply.Stdin = bytes.NewReader(rendered)
	if b, err := apply.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("install: kubectl apply: %w\n%s", err, b)
	}
	out.Objects = len(objs)
	out.Applied = time.Since(start)

	start = time.Now()
	var workloads []*unstructured.Unstructured
	for _, obj := range objs {
		if k := obj.GetKind(); k == "Deployment" || k == "DaemonSet" {
			workloads = append(workloads, obj)
			out.Workloads = append(out.Workloads, k+" "+obj.GetNamespace()+"/"+obj.GetName())
		}
	}
	if err := c.waitRolledOut(ctx, workloads, o.Timeout); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	out.RolledOut = time.Since(start)
	return out, nil
}

// pushInstallImages pushes every container image objs name: mlplane's are
// built, an upstream one comes from bin/.
func (c *Cluster) pushInstallImages(ctx context.Context, root string, objs []*unstructured.Unstructured) ([]string, error) {
	var refs []string
	for _, obj := range objs {
		for _, field := range []string{"containers", "initContainers"} {
			cs, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", field)
			for _, ctr := range cs {
				if img, _ := ctr.(map[string]any)["image"].(string); img != "" && !slices.Contains(refs, img) {
					refs = append(refs, img)
				}
			}
		}
	}
	// The loader is not in a pod template: the webhook injects it.
	loader := imagebuild.DefaultRepo + "/model-loader:" + imagebuild.DefaultTag
	if !slices.Contains(refs, loader) {
		refs = append(refs, loader)
	}
	var ours []imagebuild.Image
	for _, ref := range refs {
		if !strings.HasPrefix(ref, imagebuild.DefaultRepo+"/") {
			continue
		}
		if tag := ref[strings.LastIndexByte(ref, ':')+1:]; tag != imagebuild.DefaultTag {
			return nil, fmt.Errorf("image %s: make images tags %s", ref, imagebuild.DefaultTag)
		}
		name := strings.TrimPrefix(ref[:strings.LastIndexByte(ref, ':')], imagebuild.DefaultRepo+"/")
		sel, err := imagebuild.Select([]string{name})
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		ours = append(ours, sel...)
	}
	built, err := imagebuild.Build(ctx, ours, imagebuild.Options{Dir: root,
		Platforms: []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}})
	if err != nil {
		return nil, err
	}
	for _, b := range built {
		if len(b.Skipped) > 0 {
			return nil, fmt.Errorf("image %s: %s", b.Refs[0], strings.Join(b.Skipped, "; "))
		}
		if err := c.PushIndexRef(ctx, b.Refs[0], b.Index); err != nil {
			return nil, err
		}
	}
	for _, ref := range refs {
		if strings.HasPrefix(ref, imagebuild.DefaultRepo+"/") {
			continue
		}
		if err := c.pushToolImage(ctx, ref); err != nil {
			return nil, err
		}
	}
	return refs, nil
}

// pushToolImage pushes bin/<name> as ref (REGISTRY/.../NAME:TAG) when the
// binary's --version is TAG.
func (c *Cluster) pushToolImage(ctx context.Context, ref string) error {
	colon := strings.LastIndexByte(ref, ':')
	if colon < 0 {
		return fmt.Errorf("image %s: no tag", ref)
	}
	name, tag := ref[strings.LastIndexByte(ref[:colon], '/')+1:colon], ref[colon+1:]
	if !c.HasBin(name) {
		return fmt.Errorf("image %s: neither built by make images nor bin/%s from make tools", ref, name)
	}
	v, err := exec.CommandContext(ctx, c.Bin(name), "--version").Output()
	if err != nil {
		return fmt.Errorf("image %s: %s --version: %w", ref, c.Bin(name), err)
	}
	if f := strings.Fields(string(v)); len(f) == 0 || f[len(f)-1] != tag {
		return fmt.Errorf("image %s: bin/%s is %q, not %s (make tools pins hack/tools)", ref, name, strings.TrimSpace(string(v)), tag)
	}
	img, err := BinaryImage(c.Bin(name))
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	return c.PushImageRef(ctx, ref, img)
}

// waitRolledOut waits until each Deployment has all its replicas updated
// and available, and each DaemonSet has a scheduled, updated and available
// pod on every node it wants.
func (c *Cluster) waitRolledOut(ctx context.Context, workloads []*unstructured.Unstructured, timeout time.Duration) error {
	pending := map[string]string{}
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		clear(pending)
		for _, w := range workloads {
			key := w.GetKind() + " " + w.GetNamespace() + "/" + w.GetName()
			var why string
			switch w.GetKind() {
			case "Deployment":
				d, err := c.client.AppsV1().Deployments(w.GetNamespace()).Get(ctx, w.GetName(), metav1.GetOptions{})
				if err != nil {
					why = err.Error()
				} else if why = deploymentPending(d); why == "" {
					continue
				}
			case "DaemonSet":
				ds, err := c.client.AppsV1().DaemonSets(w.GetNamespace()).Get(ctx, w.GetName(), metav1.GetOptions{})
				if err != nil {
					why = err.Error()
				} else if why = daemonSetPending(ds); why == "" {
					continue
				}
			}
			pending[key] = why
		}
		return len(pending) == 0, nil
	})
	if err == nil {
		return nil
	}
	var b strings.Builder
	for _, w := range workloads {
		key := w.GetKind() + " " + w.GetNamespace() + "/" + w.GetName()
		if why, ok := pending[key]; ok {
			fmt.Fprintf(&b, "\n  %s: %s", key, why)
			c.describePods(ctx, &b, w)
		}
	}
	return fmt.Errorf("not rolled out in %s:%s", timeout, b.String())
}

func deploymentPending(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	if s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want {
		return ""
	}
	return fmt.Sprintf("%d replicas, %d updated, %d available of %d", s.Replicas, s.UpdatedReplicas, s.AvailableReplicas, want)
}

func daemonSetPending(ds *appsv1.DaemonSet) string {
	s := ds.Status
	if s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled > 0 &&
		s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled {
		return ""
	}
	return fmt.Sprintf("%d wanted, %d updated, %d available", s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberAvailable)
}

// describePods writes the phase, container states and last events of the
// workload's pods that are not Ready.
func (c *Cluster) describePods(ctx context.Context, w io.Writer, obj *unstructured.Unstructured) {
	sel, _, _ := unstructured.NestedStringMap(obj.Object, "spec", "selector", "matchLabels")
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	pods, err := c.client.CoreV1().Pods(obj.GetNamespace()).List(ctx, metav1.ListOptions{LabelSelector: strings.Join(parts, ",")})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		fmt.Fprintf(w, "\n    pod %s: %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName)
		for _, s := range p.Status.ContainerStatuses {
			switch {
			case s.State.Waiting != nil:
				fmt.Fprintf(w, "; %s waiting: %s %s", s.Name, s.State.Waiting.Reason, s.State.Waiting.Message)
			case s.State.Terminated != nil:
				fmt.Fprintf(w, "; %s exited %d: %s", s.Name, s.State.Terminated.ExitCode, s.State.Terminated.Message)
			default:
				fmt.Fprintf(w, "; %s ready=%t restarts=%d", s.Name, s.Ready, s.RestartCount)
			}
		}
		evs, err := c.client.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			continue
		}
		items := evs.Items
		if len(items) > 3 {
			items = items[len(items)-3:]
		}
		for _, e := range items {
			fmt.Fprintf(w, "\n      event %s %s: %s", e.Type, e.Reason, e.Message)
		}
	}
}

// stderrOf is ": <stderr>" of a failed exec.Cmd.Output, "" otherwise.
func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}
