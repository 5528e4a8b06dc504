package mutate

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
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

// readPods are the pods created from the pods and pod templates in
// multi-document YAML (TemplatePod).
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
		pod, ok, err := TemplatePod(obj)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			pods = append(pods, pod)
		}
	}
}
