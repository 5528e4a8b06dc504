package gpu

import (
	"context"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

// A pod started after the last list is found at the next poll at most a
// relist gap later, not a report interval later; a UID no list has (a
// deleted pod's lingering process) lists again only after the interval.
func TestPodListerFindsNewPodsWithinARelistGap(t *testing.T) {
	ctx := context.Background()
	pod := func(name, uid string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: name, UID: types.UID(uid),
			Annotations: map[string]string{api.AnnotationGPUMemory: "4Gi"}}, Spec: corev1.PodSpec{NodeName: "n1"}}
	}
	cs := fake.NewClientset(pod("a", "uid-a"))
	lists := 0
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		lists++
		return false, nil, nil
	})
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	l := newPodLister(clientsetAPI{cs}, "n1", clk, 30*time.Second)

	ask := func(uid string, wantFound bool, wantLists int) {
		t.Helper()
		info, ok := l.Pod(ctx, uid)
		if ok != wantFound || lists != wantLists {
			t.Fatalf("Pod(%s) at +%v = %+v, %v after %d lists; want found=%v after %d lists",
				uid, clk.Since(time.Unix(1000, 0)), info, ok, lists, wantFound, wantLists)
		}
	}
	ask("uid-a", true, 1)
	if info, _ := l.Pod(ctx, "uid-a"); info != (PodInfo{Namespace: "ml", Name: "a", BookedMiB: 4096}) {
		t.Fatalf("Pod(uid-a) = %+v", info)
	}
	if _, err := cs.CoreV1().Pods("ml").Create(ctx, pod("b", "uid-b"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ask("uid-b", false, 1) // within the relist gap of the first list
	clk.Step(podRelistGap)
	ask("uid-b", true, 2) // the next poll finds it
	ask("uid-a", true, 2) // still known without a list

	clk.Step(podRelistGap)
	ask("uid-gone", false, 3) // unknown: one list
	clk.Step(5 * podRelistGap)
	ask("uid-gone", false, 3) // known missing: no list before the interval
	if _, err := cs.CoreV1().Pods("ml").Create(ctx, pod("c", "uid-c"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ask("uid-c", true, 4) // a new UID still lists at once
	clk.Step(30 * time.Second)
	ask("uid-gone", false, 5) // the interval has passed: asked again
}
