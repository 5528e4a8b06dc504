package mutate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
)

// FuzzMutate decodes a pod as the webhook does (case-sensitively, like the
// API server) and mutates it. Whatever the input: no panic; a patch
// applies to the pod; the patched pod is not mutated again; and no
// container ends with a request above its limit unless the user set both.
func FuzzMutate(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var pod corev1.Pod
		if yaml.Unmarshal(data, &pod) == nil && pod.Kind == "Pod" {
			j, _ := json.Marshal(&pod)
			f.Add(j)
		}
	}
	f.Add([]byte(`{"metadata":{"annotations":{"mlplane.io/gpu-memory":"1.5Gi","mlplane.io/gpu-count":"3","mlplane.io/model-uri":"pvc://c/a/b"}},"spec":{"containers":[{"name":"a","resources":{"limits":{"memory":"1"}}}]}}`))
	f.Add([]byte(`{"metadata":{"annotations":{"mlplane.io/model-uri":"oci://ghcr.io/a/b:1","mlplane.io/model-allow-patterns":"*.json"}},"spec":{"volumes":[{"name":"mlplane-model-cache"}],"containers":[{"name":"a"}]}}`))
	// testdata/config.yaml, and the configs that change the loader: the
	// node cache, oci:// pulled by the loader.
	mutators := []*Mutator{testMutator(f), caseMutator(f, "model-cache"), caseMutator(f, "model-oci-loader")}
	f.Fuzz(func(t *testing.T, data []byte) {
		var pod corev1.Pod
		if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &pod); err != nil {
			return
		}
		for _, m := range mutators {
			fuzzMutate(t, m, pod.DeepCopy())
		}
	})
}

// fuzzMutate checks FuzzMutate's properties of one pod with one Mutator.
func fuzzMutate(t *testing.T, m *Mutator, pod *corev1.Pod) {
	t.Helper()
	res, err := m.Mutate(pod, enabled)
	if err != nil || len(res.Patch) == 0 {
		return
	}
	out, err := Apply(pod, res.Patch)
	if err != nil {
		t.Fatalf("patch does not apply: %v\npatch: %+v", err, res.Patch)
	}
	again, err := m.Mutate(out, enabled)
	if err != nil || len(again.Patch) != 0 {
		t.Fatalf("second mutation: err=%v patch=%+v", err, again.Patch)
	}
	if out.Annotations[api.AnnotationStatus] == "" {
		t.Fatal("no status annotation")
	}
	userSet := map[string]bool{}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for name := range c.Resources.Requests {
				if _, ok := c.Resources.Limits[name]; ok {
					userSet[c.Name+"/"+string(name)] = true
				}
			}
		}
	}
	for _, cs := range [][]corev1.Container{out.Spec.InitContainers, out.Spec.Containers} {
		for _, c := range cs {
			for _, name := range profileResources {
				req, hasReq := c.Resources.Requests[name]
				lim, hasLim := c.Resources.Limits[name]
				if hasReq && hasLim && req.Cmp(lim) > 0 && !userSet[c.Name+"/"+string(name)] {
					t.Fatalf("container %s: %s request %s above limit %s", c.Name, name, req.String(), lim.String())
				}
			}
		}
	}
}
