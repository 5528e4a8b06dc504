package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
// ids, and the table shows per node what the scheduler placed there. It only
// gathers; renderPlacement lays the table out.
func printPlacement(ctx context.Context, w io.Writer, cs kubernetes.Interface, nodeNames []string) error {
	pods, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	byGPU := map[string][]placedPod{}  // GPU UUID -> pods, with their memory on that GPU
	byNode := map[string][]placedPod{} // node -> pods, with their total request
	perGPU := false
	for _, p := range pods.Items {
		req, ok, err := api.GPURequestFromAnnotations(p.Annotations)
		if err != nil || !ok || p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		owner := podOwner(&p)
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], placedPod{owner, req.TotalMiB()})
		for _, id := range api.ParseGPUIDs(p.Annotations[api.AnnotationGPUIDs]) {
			perGPU = true
			byGPU[id] = append(byGPU[id], placedPod{owner, req.MemoryMiB})
		}
	}
	var rows []placementRow
	for _, n := range nodeNames {
		node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return err
		}
		gpus, err := api.DecodeInventory(node.Annotations[api.NodeAnnotationGPUs])
		if err != nil {
			return fmt.Errorf("node %s: %w", n, err)
		}
		if !perGPU {
			alloc := node.Status.Allocatable[corev1.ResourceName(api.ResourceGPUMemory)]
			rows = append(rows, placementRow{Node: n, GPU: len(gpus), TotalMiB: alloc.Value(), Pods: byNode[n]})
			continue
		}
		for _, g := range gpus {
			rows = append(rows, placementRow{Node: n, GPU: g.Index, TotalMiB: g.MemoryMiB, Pods: byGPU[g.UUID]})
		}
	}
	return renderPlacement(w, perGPU, rows)
}

// podOwner is the name of the Deployment a pod belongs to (its ReplicaSet's
// generateName less the pod-template hash), else the pod's own name: the
// table counts a Deployment's replicas together.
func podOwner(p *corev1.Pod) string {
	if rs := p.GenerateName; rs != "" && len(p.OwnerReferences) > 0 && p.OwnerReferences[0].Kind == "ReplicaSet" {
		if i := strings.LastIndex(strings.TrimSuffix(rs, "-"), "-"); i > 0 {
			return rs[:i]
		}
	}
	return p.Name
}

// placedPod is one pod in a cell of the placement table.
type placedPod struct {
	// Owner is the pod's Deployment, or the pod's name when it has none.
	Owner string
	// MiB is the GPU memory the pod holds in this cell: on the row's GPU, or
	// on the whole node in the per-node view.
	MiB int64
}

// placementRow is one line of the placement table: a GPU, or in the
// per-node view a node.
type placementRow struct {
	Node string
	// GPU is the GPU's index, or in the per-node view the node's GPU count.
	GPU int
	// TotalMiB is the GPU's memory, or in the per-node view the node's
	// allocatable api.ResourceGPUMemory.
	TotalMiB int64
	Pods     []placedPod
}

// The placement table fits a terminal of placementWidth columns (counted in
// runes). Deployment names are abbreviated to at most maxAbbrev runes and
// node names to at most maxNodeWidth; the usage bar has barCells cells and is
// dropped when it would leave the PODS column fewer than minPodsWidth.
const (
	placementWidth = 100
	maxAbbrev      = 6
	maxNodeWidth   = 24
	barCells       = 10
	minPodsWidth   = 24
	columnGap      = "  "
)

// renderPlacement writes the placement table: a title, a header, one line
// per row and a key from the abbreviations in the PODS column back to
// Deployment names. perGPU chooses between the view from the extender's
// assignments (a row per GPU) and the per-node view.
//
// A GPU's line reads
//
//	gpu-node-0  0    70Gi/80Gi  █████████░  l38b 20Gi×2, m7b 18Gi, e 4Gi×3
//
// REQ is the memory the pods request; the bar shows REQ/TOTAL, with a
// cell filled as soon as anything is requested and a full bar only when
// the GPU is full. In PODS, "e 4Gi×3" is three pods of the Deployment
// abbreviated "e", each holding 4Gi; the entries holding the most memory
// come first, and the pods that do not fit are counted in "+N more".
// Every line is at most placementWidth runes.
func renderPlacement(w io.Writer, perGPU bool, rows []placementRow) error {
	title := "Placement per node (no pod carries " + api.AnnotationGPUIDs + ": the extender is not running, so this is the scheduler's per-node choice):"
	header := []string{"NODE", "GPUS", "REQ/ALLOC", "USAGE", "PODS"}
	if perGPU {
		title = "Placement per GPU (from " + api.AnnotationGPUIDs + ", written by the extender):"
		header = []string{"NODE", "GPU", "REQ/TOTAL", "USAGE", "PODS"}
	}

	var owners []string
	cells := make([][]string, len(rows))
	for i, r := range rows {
		var req int64
		for _, p := range r.Pods {
			req += p.MiB
			owners = append(owners, p.Owner)
		}
		cells[i] = []string{clipMiddle(r.Node, maxNodeWidth), strconv.Itoa(r.GPU), mib(req) + "/" + mib(r.TotalMiB), bar(req, r.TotalMiB, barCells)}
	}
	widths := make([]int, 3)
	for i, h := range header[:3] {
		widths[i] = runes(h)
		for _, c := range cells {
			widths[i] = max(widths[i], runes(c[i]))
		}
	}
	podsWidth := placementWidth
	for _, wd := range widths {
		podsWidth -= wd + len(columnGap)
	}
	withBar := podsWidth-barCells-len(columnGap) >= minPodsWidth
	if withBar {
		widths = append(widths, barCells)
		podsWidth -= barCells + len(columnGap)
	} else {
		header = slices.Delete(header, 3, 4)
	}

	abbr := abbreviations(owners)
	shown := map[string]bool{}
	var b strings.Builder
	line := func(cols []string, last string) {
		var l strings.Builder
		for i, wd := range widths {
			fmt.Fprintf(&l, "%-*s%s", wd, cols[i], columnGap)
		}
		l.WriteString(last)
		b.WriteString(clip(l.String(), placementWidth) + "\n")
	}
	b.WriteString("\n")
	for _, l := range wrap(strings.Fields(title), "", " ", placementWidth) {
		b.WriteString(l + "\n")
	}
	line(header, header[len(header)-1])
	for i, r := range rows {
		line(cells[i], podsCell(r.Pods, abbr, podsWidth, shown))
	}
	var key []string
	for owner, a := range abbr {
		if shown[owner] && a != owner {
			key = append(key, a+"="+owner)
		}
	}
	if len(key) > 0 {
		sort.Strings(key)
		for _, l := range wrap(key, "key: ", "  ", placementWidth) {
			b.WriteString(l + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// podsCell renders a row's pods in at most width runes: one entry per
// owner and size, those holding the most memory first, and "+N more" for
// the pods that do not fit. It marks in shown the owners it names.
func podsCell(pods []placedPod, abbr map[string]string, width int, shown map[string]bool) string {
	if len(pods) == 0 {
		return "-"
	}
	type group struct {
		placedPod
		n int
	}
	var groups []group
	for _, p := range pods {
		i := slices.IndexFunc(groups, func(g group) bool { return g.placedPod == p })
		if i < 0 {
			groups = append(groups, group{p, 0})
			i = len(groups) - 1
		}
		groups[i].n++
	}
	sort.Slice(groups, func(i, j int) bool {
		a, b := groups[i], groups[j]
		if a.MiB*int64(a.n) != b.MiB*int64(b.n) {
			return a.MiB*int64(a.n) > b.MiB*int64(b.n)
		}
		if a.MiB != b.MiB {
			return a.MiB > b.MiB
		}
		return abbr[a.Owner] < abbr[b.Owner]
	})
	entries := make([]string, len(groups))
	for i, g := range groups {
		entries[i] = abbr[g.Owner] + " " + mib(g.MiB)
		if g.n > 1 {
			entries[i] += "×" + strconv.Itoa(g.n)
		}
	}
	// The longest prefix of entries that fits together with the count of
	// the pods left out; "+N more" alone if none does.
	cell := func(k int) string {
		more := 0
		for _, g := range groups[k:] {
			more += g.n
		}
		if more == 0 {
			return strings.Join(entries, ", ")
		}
		return strings.Join(append(slices.Clone(entries[:k]), fmt.Sprintf("+%d more", more)), ", ")
	}
	k := len(entries)
	for k > 0 && runes(cell(k)) > width {
		k--
	}
	for _, g := range groups[:k] {
		shown[g.Owner] = true
	}
	return cell(k)
}

// abbreviations gives each owner a short name, unique among owners: the
// first letter of each dash- or dot-separated part with the digits that end
// it, and parts that start with a digit whole (llama-3-8b → l38b, resnet50 →
// r50, whisper-small → ws), clipped to maxAbbrev runes. Owners that would
// share one get "_2", "_3"... in name order after the first.
func abbreviations(owners []string) map[string]string {
	names := slices.Compact(slices.Sorted(slices.Values(owners)))
	out := make(map[string]string, len(names))
	taken := map[string]int{}
	for _, name := range names {
		a := clip(initials(name), maxAbbrev)
		taken[a]++
		if taken[a] > 1 {
			a += "_" + strconv.Itoa(taken[a])
		}
		out[name] = a
	}
	return out
}

func initials(name string) string {
	var b strings.Builder
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '-' || r == '.' }) {
		first, size := utf8.DecodeRuneInString(part)
		if unicode.IsDigit(first) {
			b.WriteString(part)
			continue
		}
		rest := part[size:]
		b.WriteRune(first)
		b.WriteString(rest[len(strings.TrimRightFunc(rest, unicode.IsDigit)):])
	}
	if b.Len() == 0 {
		return name
	}
	return b.String()
}

// bar draws used/total in cells cells of █ and ░, rounded to the nearest
// cell, except that anything used fills one cell and only a full GPU fills
// them all.
func bar(used, total int64, cells int) string {
	filled := cells
	if total > 0 && used < total {
		filled = int((used*int64(cells) + total/2) / total)
		if used > 0 {
			filled = max(filled, 1)
		}
		filled = min(filled, cells-1)
	}
	if used == 0 {
		filled = 0
	}
	return strings.Repeat("█", filled) + strings.Repeat("░", cells-filled)
}

// wrap joins words with sep into lines of at most width runes, the first
// starting with prefix and the others indented as deep; a word too long for
// a line of its own is clipped.
func wrap(words []string, prefix, sep string, width int) []string {
	indent := strings.Repeat(" ", runes(prefix))
	var lines []string
	cur := prefix
	for _, w := range words {
		switch {
		case cur == prefix || cur == indent:
			cur += w
		case runes(cur)+runes(sep)+runes(w) <= width:
			cur += sep + w
		default:
			lines = append(lines, clip(cur, width))
			cur = indent + w
		}
	}
	return append(lines, clip(cur, width))
}

func runes(s string) int { return utf8.RuneCountInString(s) }

// clip shortens s to n runes, the last one "…".
func clip(s string, n int) string {
	if runes(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// clipMiddle shortens s to n runes with "…" in the middle, keeping both
// ends: node names often differ only at the end (gpu-node-0, gpu-node-1).
func clipMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	tail := (n - 1) / 2
	return string(r[:n-1-tail]) + "…" + string(r[len(r)-tail:])
}

// mib renders MiB as Gi when exact.
func mib(m int64) string {
	if m%1024 == 0 {
		return fmt.Sprintf("%dGi", m/1024)
	}
	return fmt.Sprintf("%dMi", m)
}
