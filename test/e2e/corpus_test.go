package e2e

// The corpus (issue 14): whenever a user's pod is valid and passes a Pod
// Security level, the pod the webhook returns is valid and passes the same
// level on the real API server, or the webhook denies it saying why; and
// `webhook inject` gives the very pod the served webhook gives.
//
// Every golden input of internal/mutate/testdata (with its InjectionConfig)
// and the real-world-shaped manifests of testdata/corpus are turned into
// the pods their controllers would create, then created with server-side
// dry run (dryRun: All, nothing is stored) in namespaces that enforce Pod
// Security "restricted", "baseline" and "privileged": first in one without
// the webhook (the input's verdict), then in one where a webhook instance
// with the case's config is registered (the served pod), then the offline
// output of `webhook inject` for that same namespace (which the webhook
// leaves alone, as it is already mutated). The served and the offline pod,
// as the API server returns them, must be equal.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	psaapi "k8s.io/pod-security-admission/api"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/mutate"
)

// corpusConfigLabel selects, on a namespace, the corpus webhook instance
// (by its config's name) that mutates its pods.
const corpusConfigLabel = "e2e.mlplane.io/corpus-config"

// corpusLevels are the Pod Security levels the corpus namespaces enforce.
var corpusLevels = []psaapi.Level{psaapi.LevelRestricted, psaapi.LevelBaseline, psaapi.LevelPrivileged}

// corpusDoc is one workload or pod of the corpus.
type corpusDoc struct {
	name   string // file, document and object, for messages
	config string // the InjectionConfig's name: "config" or a golden case's
	obj    map[string]any
}

// corpusDenials are the pods the webhook denies, by case and level, with
// what the denial must say: each is a pod mlplane cannot mutate into one the
// level accepts, or cannot run.
var corpusDenials = map[string]string{
	"windows.yaml#2 Pod/windows-gpu baseline":            "mlplane's GPU wiring (the NVIDIA container runtime) runs on Linux only",
	"windows.yaml#2 Pod/windows-gpu privileged":          "mlplane's GPU wiring (the NVIDIA container runtime) runs on Linux only",
	"hostnetwork.yaml#2 Pod/hostnet-clash privileged":    `template "metrics": container "metrics-exporter" declares port 9400/TCP on the node's network (spec.hostNetwork), which container "exporter" of the pod declares too`,
	"restricted-pods.yaml#3 Pod/tight-budget baseline":   "the pod's spec.resources.requests[cpu] is 250m, less than the 500m its containers request once mlplane adds metrics-exporter, mlplane-model-loader",
	"restricted-pods.yaml#3 Pod/tight-budget privileged": "the pod's spec.resources.requests[cpu] is 250m, less than the 500m its containers request once mlplane adds metrics-exporter, mlplane-model-loader",
	"model-cache.yaml#1 Pod/bert baseline":               `enforces Pod Security "baseline:latest", which the pod passes but the containers and volumes mlplane adds do not: hostPath volumes`,
}

func TestWebhookCorpus(t *testing.T) {
	f := features.New("the corpus on the real API server").
		WithLabel("component", "webhook").
		Assess("every pod accepted without the webhook is accepted with it, as `webhook inject` gives it", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.Webhook)
			start := time.Now()
			cs := quietClientset(t, cfg)
			root, err := cluster.ModuleRoot()
			if err != nil {
				t.Fatal(err)
			}
			docs, configs := loadCorpus(t, root)

			// One namespace per level without the webhook, and one per level
			// and config with it.
			plain := map[psaapi.Level]string{}
			served := map[string]map[psaapi.Level]string{}
			nsLabels := map[string]map[string]string{}
			for _, level := range corpusLevels {
				plain[level] = CreateNamespace(ctx, t, cfg, "corpus-plain", map[string]string{psaapi.EnforceLevelLabel: string(level)})
				for key := range configs {
					if served[key] == nil {
						served[key] = map[psaapi.Level]string{}
					}
					labels := map[string]string{psaapi.EnforceLevelLabel: string(level), api.LabelInject: api.NamespaceInjectEnabled, corpusConfigLabel: key}
					ns := CreateNamespace(ctx, t, cfg, "corpus", labels)
					served[key][level] = ns
					labels[corev1.LabelMetadataName] = ns
					nsLabels[ns] = labels
				}
			}
			mutators := startCorpusWebhooks(ctx, t, c, cs, configs, served)

			type outcome struct {
				key, verdict string
				failure      string
			}
			var mu sync.Mutex
			var outcomes []outcome
			jobs := make(chan func())
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for job := range jobs {
						job()
					}
				}()
			}
			for _, d := range docs {
				for _, level := range corpusLevels {
					jobs <- func() {
						key := d.name + " " + string(level)
						verdict, failure := corpusCase(ctx, cs, d, mutators[d.config], plain[level], served[d.config][level], nsLabels)
						mu.Lock()
						outcomes = append(outcomes, outcome{key, verdict, failure})
						mu.Unlock()
					}
				}
			}
			close(jobs)
			wg.Wait()

			sort.Slice(outcomes, func(i, j int) bool { return outcomes[i].key < outcomes[j].key })
			counts := map[string]int{}
			failures := 0
			for _, o := range outcomes {
				kind, _, _ := strings.Cut(o.verdict, ":")
				counts[kind]++
				want, denied := corpusDenials[o.key]
				switch {
				case o.failure != "":
					failures++
					t.Errorf("%s: %s", o.key, o.failure)
				case denied && !strings.Contains(o.verdict, want):
					failures++
					t.Errorf("%s: %s; want a denial saying %q", o.key, o.verdict, want)
				case !denied && strings.HasPrefix(o.verdict, "denied"):
					failures++
					t.Errorf("%s: %s; the webhook denies a pod the corpus expects it to mutate", o.key, o.verdict)
				}
			}
			t.Logf("corpus: %d documents from %d configs, %d pods created per level (%d levels): %d accepted as input and after the webhook, %d accepted as input and rejected after it, %d denied by the webhook, %d inputs rejected without it; %d failures; %s",
				len(docs), len(configs), len(docs), len(corpusLevels), counts["accepted"], counts["rejected"], counts["denied"], counts["input rejected"], failures, time.Since(start).Round(time.Millisecond))
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// loadCorpus reads the golden inputs (each with its config: its own
// <case>.config.yaml, else config.yaml) and testdata/corpus (config.yaml).
// It returns the documents that hold a pod or a pod template, and the
// config files by name.
func loadCorpus(t *testing.T, root string) ([]corpusDoc, map[string]string) {
	t.Helper()
	golden := filepath.Join(root, "internal", "mutate", "testdata")
	configs := map[string]string{"config": filepath.Join(golden, "config.yaml")}
	var files []struct{ path, config string }
	paths, _ := filepath.Glob(filepath.Join(golden, "*.yaml"))
	for _, p := range paths {
		base := strings.TrimSuffix(filepath.Base(p), ".yaml")
		if base == "config" || strings.HasSuffix(base, ".injected") || strings.HasSuffix(base, ".config") {
			continue
		}
		key := "config"
		if own := filepath.Join(golden, base+".config.yaml"); fileExists(own) {
			key, configs[base] = base, own
		}
		files = append(files, struct{ path, config string }{p, key})
	}
	paths, _ = filepath.Glob(filepath.Join(root, "test", "e2e", "testdata", "corpus", "*.yaml"))
	for _, p := range paths {
		files = append(files, struct{ path, config string }{p, "config"})
	}
	var docs []corpusDoc
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f.path, err)
			}
			var obj map[string]any
			if err := yaml.Unmarshal(raw, &obj); err != nil || obj == nil {
				continue
			}
			if _, ok, _ := mutate.TemplatePod(obj); !ok {
				continue
			}
			meta, _ := obj["metadata"].(map[string]any)
			docs = append(docs, corpusDoc{
				name:   fmt.Sprintf("%s#%d %v/%v", filepath.Base(f.path), i, obj["kind"], meta["name"]),
				config: f.config, obj: obj,
			})
		}
	}
	if len(docs) < 40 {
		t.Fatalf("the corpus has only %d documents", len(docs))
	}
	return docs, configs
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// podOf is the pod obj's controller creates (or obj) in namespace ns.
func podOf(obj map[string]any, ns string) (*corev1.Pod, error) {
	pod, _, err := mutate.TemplatePod(obj)
	if err != nil {
		return nil, err
	}
	pod.Name, pod.GenerateName, pod.Namespace = "", strings.ToLower(strings.TrimSuffix(pod.GenerateName, "-")+pod.Name)+"-", ns
	return pod, nil
}

// corpusCase runs one document at one level: its verdict ("accepted",
// "denied: MESSAGE" or "input rejected: MESSAGE") and, if the rule is
// broken, why.
func corpusCase(ctx context.Context, cs kubernetes.Interface, d corpusDoc, m *mutate.Mutator, plainNS, servedNS string, nsLabels map[string]map[string]string) (verdict, failure string) {
	input, err := podOf(d.obj, plainNS)
	if err != nil {
		return "input undecodable", err.Error()
	}
	delete(input.Labels, api.LabelInject) // no webhook: the pod does not opt in
	if _, err := dryRun(ctx, cs, input); err != nil {
		return "input rejected: " + err.Error(), ""
	}
	pod, _ := podOf(d.obj, servedNS)
	servedPod, servedErr := dryRun(ctx, cs, pod)

	// Offline, for the same namespace.
	obj := deepCopyJSON(d.obj)
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	meta["namespace"] = servedNS
	in, err := yaml.Marshal(obj)
	if err != nil {
		return "", err.Error()
	}
	var out bytes.Buffer
	injectErr := m.Inject(bytes.NewReader(in), &out, func(ns string) map[string]string { return nsLabels[ns] }, func(string) {})

	if servedErr != nil {
		msg := servedErr.Error()
		if !strings.Contains(msg, `inject.mlplane.io" denied the request: `) {
			return "rejected: " + msg, "the input is accepted, the mutated pod is not: " + msg
		}
		msg = msg[strings.Index(msg, "denied the request: ")+len("denied the request: "):]
		if injectErr == nil || !strings.Contains(injectErr.Error(), msg) {
			return "denied: " + msg, fmt.Sprintf("served denied (%s), offline: %v", msg, injectErr)
		}
		return "denied: " + msg, ""
	}
	if injectErr != nil {
		return "accepted", "served accepted, offline failed: " + injectErr.Error()
	}
	var outObj map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &outObj); err != nil {
		return "accepted", "offline output: " + err.Error()
	}
	offline, err := podOf(outObj, servedNS)
	if err != nil {
		return "accepted", "offline output: " + err.Error()
	}
	offlinePod, err := dryRun(ctx, cs, offline)
	if err != nil {
		return "accepted", "the served pod is accepted, the offline one is not: " + err.Error()
	}
	if diff := cmp.Diff(comparable(servedPod), comparable(offlinePod)); diff != "" {
		return "accepted", "served and offline pods differ (-served +offline):\n" + diff
	}
	return "accepted", ""
}

// dryRun creates pod with dryRun All: admission (webhooks, Pod Security)
// and validation run, nothing is stored.
func dryRun(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) (*corev1.Pod, error) {
	return cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

func deepCopyJSON(obj map[string]any) map[string]any {
	b, _ := json.Marshal(obj)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// comparable is p without what differs between two creations of one pod:
// its generated name, uid and timestamps, and the random suffix of the
// service account token volume.
func comparable(p *corev1.Pod) *corev1.Pod {
	p = p.DeepCopy()
	p.ObjectMeta = metav1.ObjectMeta{Namespace: p.Namespace, Labels: p.Labels, Annotations: p.Annotations}
	const token = "kube-api-access-"
	for i := range p.Spec.Volumes {
		if strings.HasPrefix(p.Spec.Volumes[i].Name, token) {
			p.Spec.Volumes[i].Name = token
		}
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			for j := range cs[i].VolumeMounts {
				if strings.HasPrefix(cs[i].VolumeMounts[j].Name, token) {
					cs[i].VolumeMounts[j].Name = token
				}
			}
		}
	}
	return p
}

// startCorpusWebhooks starts one webhook instance per config, registered
// for the namespaces labelled with its name, and returns the Mutators of
// the same configs (for `webhook inject`). Configurations are called in
// name order: e2e-corpus-* come before the suite's mlplane-webhook, which
// then leaves the mutated pods alone.
func startCorpusWebhooks(ctx context.Context, t *testing.T, c *cluster.Cluster, cs kubernetes.Interface, configs map[string]string, served map[string]map[psaapi.Level]string) map[string]*mutate.Mutator {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(c.WebhookCertDir(), "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	mutators := map[string]*mutate.Mutator{}
	instances := map[string]cluster.WebhookInstance{}
	for key, file := range configs {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		ic, err := mutate.LoadConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		if mutators[key], err = mutate.New(ic, mutate.Options{}); err != nil {
			t.Fatal(err)
		}
		w, err := c.StartWebhookInstance(ctx, "webhook-corpus-"+key, "--cert-dir="+c.WebhookCertDir(), "--namespace="+api.DefaultNamespace, "--config="+file)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.StopComponent(w.Name) })
		instances[key] = w
		mwc := cluster.WebhookConfiguration(w.URL(), ca)
		mwc.Name = "e2e-corpus-" + key
		for i := range mwc.Webhooks {
			sel := mwc.Webhooks[i].NamespaceSelector
			sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{
				Key: corpusConfigLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{key}})
		}
		registerWebhookConfiguration(ctx, t, cs, mwc)
	}
	// The API server sees a new configuration through an informer: wait
	// until each instance mutates a pod of its namespaces.
	for key, w := range instances {
		ns := served[key][psaapi.LevelPrivileged]
		var last string
		err := wait.For(func(ctx context.Context) (bool, error) {
			before := mutatedCount(ctx, t, w)
			p, err := dryRunPod(ctx, cs, ns, "probe")
			if err != nil {
				last = err.Error()
				return false, nil
			}
			last = fmt.Sprintf("status %q", p.Annotations[api.AnnotationStatus])
			return mutatedCount(ctx, t, w) > before, nil
		}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond))
		if err != nil {
			t.Fatalf("webhook instance %s never mutated a pod in %s: %v (last: %s)", w.Name, ns, err, last)
		}
	}
	return mutators
}

// quietClientset is Clientset without the admission warnings on stderr:
// the corpus makes hundreds, by design.
func quietClientset(t *testing.T, cfg *envconf.Config) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.KubeconfigFile())
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = cluster.ClientQPS, cluster.ClientBurst
	rc.WarningHandler = rest.NoWarnings{}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
