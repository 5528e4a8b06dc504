package mutate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
)

// checkAppendPatch fails unless AppendPatch writes what json.Marshal does.
func checkAppendPatch(t *testing.T, ops []Op) {
	t.Helper()
	want, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendPatch([]byte("prefix"), ops)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(got, []byte("prefix")) || string(got[len("prefix"):]) != string(want) {
		t.Errorf("AppendPatch\n got  %s\n want %s", got, want)
	}
}

// TestAppendPatch compares AppendPatch with json.Marshal on the patch of
// every pod and pod template of the golden cases, of the fuzz corpus, and
// of values the builder does not make today.
func TestAppendPatch(t *testing.T) {
	m := testMutator(t)
	patched := 0
	for _, name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			m := caseMutator(t, name)
			for _, p := range goldenPods(t, filepath.Join("testdata", name+".yaml")) {
				res, err := m.Mutate(p, Namespace{Name: p.Namespace, Labels: testLabels(p.Namespace)})
				if err != nil {
					continue
				}
				if len(res.Patch) > 0 {
					patched++
				}
				checkAppendPatch(t, res.Patch)
			}
		})
	}
	if patched < 10 {
		t.Errorf("only %d golden pods patched", patched)
	}
	corpus, _ := filepath.Glob("testdata/fuzz/FuzzMutate/*")
	for _, file := range corpus {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// go test fuzz v1\n[]byte("...")
		_, lit, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
		raw, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lit, "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var pod corev1.Pod
		if kjson.UnmarshalCaseSensitivePreserveInts([]byte(raw), &pod) != nil {
			continue
		}
		if res, err := m.Mutate(&pod, enabled); err == nil {
			checkAppendPatch(t, res.Patch)
		}
	}
	q := resource.MustParse
	for _, ops := range [][]Op{
		nil,
		{},
		{{Op: "add", Path: "/metadata/labels", Value: map[string]string(nil)}},
		{{Op: "add", Path: "/metadata/labels", Value: map[string]string{}}},
		{{Op: "add", Path: "/metadata/labels", Value: map[string]string{"b": "<&>", "a": "\u2028é\x00", "c\"": "\xff"}}},
		{{Op: "replace", Path: "/x~1y", Value: "a\"b\\c\n<>"}},
		{{Op: "add", Path: "/spec/containers/0/resources", Value: (*resourcesValue)(nil)}},
		{{Op: "add", Path: "/spec/containers/0/resources", Value: &resourcesValue{}}},
		{{Op: "add", Path: "/spec/containers/0/resources", Value: &resourcesValue{
			Requests: corev1.ResourceList{"cpu": q("2"), api.ResourceGPUMemory: q("40960")},
			Limits:   corev1.ResourceList{"we\"ird<": q("1.5Gi")},
			Claims:   []corev1.ResourceClaim{{Name: "gpu<", Request: "a&b"}}}}},
		{{Op: "add", Path: "/a", Value: nil}, {Op: "add", Path: "/b", Value: 5}, {Op: "add", Path: "/c", Value: []string{"<"}}},
		{{Op: "add", Path: "/spec/containers/-", Value: &corev1.Container{Name: "c", Env: []corev1.EnvVar{{Name: "X", Value: "<y>"}}}}},
		{{Op: "add", Path: "/env", Value: []corev1.EnvVar(nil)}, {Op: "add", Path: "/env", Value: []corev1.EnvVar{}}},
		{{Op: "add", Path: "/env", Value: []corev1.EnvVar{{Name: "A", Value: "<1>"}, {Name: "B"}, visibleDevicesFn,
			{Name: "C", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
		{{Op: "replace", Path: "/env/0", Value: corev1.EnvVar{Name: "D", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}}},
		{{Op: "replace", Path: "/env/0", Value: corev1.EnvVar{Name: "E", Value: "v", ValueFrom: &corev1.EnvVarSource{
			FieldRef:         &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
			ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}}}},
		{{Op: "replace", Path: "/env/0", Value: corev1.EnvVar{Name: "F", ValueFrom: &corev1.EnvVarSource{}}}},
		{{Op: "add", Path: "/spec/volumes", Value: []*corev1.Volume(nil)}, {Op: "add", Path: "/spec/volumes", Value: []*corev1.Volume{nil}},
			{Op: "add", Path: "/spec/volumes/-", Value: (*corev1.Volume)(nil)}},
		{{Op: "add", Path: "/spec/volumes", Value: []*corev1.Volume{
			{Name: "a", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "b", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory", SizeLimit: ptr(q("+1Gi")), Mode: ptr(int32(0o755))}}},
			{Name: "c", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(q("1.50Gi"))}}},
			{Name: "d", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Mode: ptr(int32(-1))}}},
			{Name: "e<", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
			{Name: "f", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c", ReadOnly: true}}},
			{Name: "g", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{},
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
			{Name: "h", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "m"}}}},
			{Name: "i", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}, Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
			{Name: "j"},
			{Name: "k", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/<cache>", Type: ptr(corev1.HostPathDirectoryOrCreate)}}},
			{Name: "l", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{}}},
			{Name: "m", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/x", Type: ptr(corev1.HostPathType(""))}}},
			{Name: "n", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "ghcr.io/a/b:1", PullPolicy: corev1.PullIfNotPresent}}},
			{Name: "o", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{}}},
			{Name: "p", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{PullPolicy: "Always"}}},
			{Name: "q", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/h"}, EmptyDir: &corev1.EmptyDirVolumeSource{},
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}, Image: &corev1.ImageVolumeSource{Reference: "r"}}},
			{Name: "r", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "r"}, Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
		}}},
	} {
		checkAppendPatch(t, ops)
	}
}

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
