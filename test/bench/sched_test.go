package bench

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

func TestPackingOf(t *testing.T) {
	pod := func(i int, node, ids string) *corev1.Pod {
		p := SchedPod("ns", api.DefaultSchedulerName, i) // sizes cycle 20, 16, 8, ... GiB
		p.Spec.NodeName = node
		if ids != "" {
			p.Annotations[api.AnnotationGPUIDs] = ids
		}
		return p
	}
	objs := []any{
		pod(0, "n1", "g1"), // 20 GiB
		pod(1, "n1", "g1"), // 16 GiB
		pod(2, "n2", "g7"), // 8 GiB
		pod(3, "", ""),     // 40 GiB, not bound: not counted
		pod(6, "n2", "g8"), // 72 GiB
	}
	got, err := packingOf(objs, "2x80Gi")
	if err != nil {
		t.Fatal(err)
	}
	// 116 GiB on 80 GiB GPUs: at least 2 GPUs, 1 node of 2.
	want := SchedPacking{NodesUsed: 2, GPUsUsed: 3, GPUsLowerBound: 2, NodesLowerBound: 1}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := packingOf(nil, "80Gi"); err == nil || err.Error() != `GPUs "80Gi": want COUNTxSIZE, e.g. 8x80Gi` {
		t.Fatalf("bad spec: %v", err)
	}
}
