package mutate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

func ptr[T any](v T) *T { return &v }

// goldenPods are the pods and pod templates in file, each as Inject hands
// it to Mutate.
func goldenPods(t *testing.T, file string) []*corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return readPods(t, data)
}

// readPods are the pods and pod templates in multi-document YAML, each as
// Inject hands it to Mutate.
func readPods(t *testing.T, data []byte) []*corev1.Pod {
	t.Helper()
	var pods []*corev1.Pod
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return pods
		}
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if yaml.Unmarshal(doc, &obj) != nil || obj == nil {
			continue
		}
		kind, _ := obj["kind"].(string)
		apiVersion, _ := obj["apiVersion"].(string)
		group, _, ok := strings.Cut(apiVersion, "/")
		if !ok {
			group = ""
		}
		tpath, ok := templatePaths[group+"/"+kind]
		if !ok {
			continue
		}
		namespace, _ := obj["metadata"].(map[string]any)["namespace"].(string)
		if namespace == "" {
			namespace = DefaultNamespaceName
		}
		tmpl := obj
		for _, k := range tpath {
			tmpl = tmpl[k].(map[string]any)
		}
		j, err := json.Marshal(map[string]any{"metadata": tmpl["metadata"], "spec": tmpl["spec"]})
		if err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(j, pod); err != nil {
			t.Fatal(err)
		}
		pod.Namespace = namespace
		pods = append(pods, pod)
	}
}
