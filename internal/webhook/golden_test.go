package webhook

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	psaapi "k8s.io/pod-security-admission/api"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/mutate"
)

// goldenNamespaces are the labels of the namespaces the golden cases of
// internal/mutate live in (as its golden test has them).
var goldenNamespaces = StaticNamespaces{
	"ml":    {api.LabelInject: api.NamespaceInjectEnabled},
	"plain": {"team": "search"},
	"ml-restricted": {api.LabelInject: api.NamespaceInjectEnabled,
		psaapi.EnforceLevelLabel: string(psaapi.LevelRestricted)},
}

// TestGoldenServedAsOffline runs every golden case of internal/mutate
// through both paths, as Istio's injector tests do: offline, `webhook
// inject`'s Mutator.Inject on the YAML; served, the pod its controller
// creates from each template, sent to the Handler over HTTP, the patch it
// answers applied with the API server's JSON patch library
// (gopkg.in/evanphx/json-patch.v4, as the mutating webhook dispatcher of
// k8s.io/apiserver applies it). Both must give the same pod, the same
// warnings, or the same denial. (The API server's defaulting, which the
// served pod also gets, is compared on the real API server by the e2e
// corpus test.)
func TestGoldenServedAsOffline(t *testing.T) {
	dir := filepath.Join("..", "mutate", "testdata")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := 0
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		if name == "config" || strings.HasSuffix(name, ".injected") || strings.HasSuffix(name, ".config") {
			continue
		}
		cases++
		t.Run(name, func(t *testing.T) {
			config := filepath.Join(dir, name+".config.yaml")
			if _, err := os.Stat(config); err != nil {
				config = filepath.Join(dir, "config.yaml")
			}
			m := loadMutator(t, config)
			h := NewHandler(MutatorFunc(func() *mutate.Mutator { return m }), goldenNamespaces, HandlerOptions{})
			srv := httptest.NewServer(h)
			defer srv.Close()
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for i, doc := range documents(t, data) {
				var obj map[string]any
				if err := yaml.Unmarshal(doc, &obj); err != nil || obj == nil {
					continue
				}
				pod, ok, err := mutate.TemplatePod(obj)
				if !ok {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				var out bytes.Buffer
				var offlineWarnings []string
				offlineErr := m.Inject(bytes.NewReader(doc), &out, func(ns string) map[string]string { return goldenNamespaces[ns] },
					func(w string) { offlineWarnings = append(offlineWarnings, w) })

				// The review is read in one pass; the pod is the one the
				// two-pass read (decodePod on the raw object) gives.
				rv := review(t, pod, admissionv1.Create)
				if err := samePodBothReads(rv); err != nil {
					t.Fatalf("document %d: %v", i+1, err)
				}
				_, body := post(t, srv.URL+Path, rv)
				resp := decodeReview(t, body)
				if !resp.Allowed {
					if offlineErr == nil || !strings.HasSuffix(offlineErr.Error(), ": "+resp.Result.Message) {
						t.Fatalf("document %d: served denies %q, offline says %v", i+1, resp.Result.Message, offlineErr)
					}
					continue
				}
				if offlineErr != nil {
					t.Fatalf("document %d: served allows, offline fails: %v", i+1, offlineErr)
				}
				served := pod
				if len(resp.Patch) > 0 {
					served = applyPatch(t, pod, resp.Patch)
				}
				var outObj map[string]any
				if err := yaml.Unmarshal(out.Bytes(), &outObj); err != nil {
					t.Fatal(err)
				}
				offline, _, err := mutate.TemplatePod(outObj)
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(served, offline); d != "" {
					t.Errorf("document %d: served and offline pods differ (-served +offline):\n%s", i+1, d)
				}
				// Offline warnings name the object: "KIND NS/NAME: ".
				for j, w := range offlineWarnings {
					_, offlineWarnings[j], _ = strings.Cut(w, ": ")
				}
				if d := cmp.Diff(resp.Warnings, offlineWarnings); d != "" {
					t.Errorf("document %d: warnings differ (-served +offline):\n%s", i+1, d)
				}
			}
		})
	}
	if cases < 30 {
		t.Fatalf("only %d golden cases", cases)
	}
}

// samePodBothReads checks that readReview reads review (as the API server
// writes it) in one pass, and that the pod is the one decodePod gives for
// the review's raw object.
func samePodBothReads(review []byte) error {
	one, err := readReview(review)
	if err != nil {
		return err
	}
	if one.Request == nil || one.Request.pod == nil || one.Request.Object != nil {
		return errors.New("readReview did not read the review in one pass")
	}
	var raw struct {
		Request struct {
			Object json.RawMessage `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal(review, &raw); err != nil {
		return err
	}
	two, err := decodePod(raw.Request.Object)
	if err != nil {
		return err
	}
	if d := cmp.Diff(two, one.Request.pod); d != "" {
		return fmt.Errorf("one-pass and two-pass reads differ (-two +one):\n%s", d)
	}
	return nil
}

// loadMutator is the Mutator of an InjectionConfig file.
func loadMutator(t testing.TB, file string) *mutate.Mutator {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := mutate.LoadConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mutate.New(cfg, mutate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// documents splits multi-document YAML.
func documents(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, doc)
	}
}

// applyPatch applies a JSON patch to pod as the API server does.
func applyPatch(t *testing.T, pod *corev1.Pod, patch []byte) *corev1.Pod {
	t.Helper()
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatal(err)
	}
	if doc, err = p.Apply(doc); err != nil {
		t.Fatalf("the patch does not apply: %v\n%s", err, patch)
	}
	out := &corev1.Pod{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(doc, out); err != nil {
		t.Fatal(err)
	}
	return out
}
