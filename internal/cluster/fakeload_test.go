package cluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/gpu"
)

// The spec FakeLoad writes is one the node agent reads: each pod's process
// on the GPU its gpu-ids name (else by order), with the current load.
func TestFakeLoadSpec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpus.yaml")
	l := NewFakeLoad(FakeLoadOptions{Path: path, Node: "n", Namespace: "ml", Selector: "app=llm", GPUs: 2, Utilization: 37})
	pods := []corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "b", UID: "uid-b", Annotations: map[string]string{api.AnnotationGPUIDs: FakeUUID("n", 1)}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "uid-a"}},
	}
	if err := l.Sync(pods); err != nil {
		t.Fatal(err)
	}
	read := func() gpu.FakeSpec {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := gpu.ParseFakeSpecYAML(b)
		if err != nil {
			t.Fatalf("the agent would refuse the spec: %v\n%s", err, b)
		}
		return spec
	}
	devs := read().Devices("n")
	type proc struct {
		gpu  int
		uid  string
		util int
		mib  int64
	}
	var got []proc
	for _, d := range devs {
		for _, p := range d.Processes {
			got = append(got, proc{d.Index, p.PodUID, p.UtilizationPercent, p.UsedMiB})
		}
	}
	// a by order on GPU 0; b on the GPU its gpu-ids name, 1
	want := []proc{{0, "uid-a", 37, 12 * 1024}, {1, "uid-b", 37, 12 * 1024}}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(proc{})); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	l.SetUtilization(90)
	if err := l.Sync(pods); err != nil {
		t.Fatal(err)
	}
	if u := read().Devices("n")[0].Processes[0].UtilizationPercent; u != 90 {
		t.Errorf("after SetUtilization(90): %d", u)
	}
}
