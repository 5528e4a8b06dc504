package gpu

import (
	"context"
	"errors"
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

	// Two lingering UIDs: one list per interval for both, not one each.
	clk.Step(podRelistGap)
	ask("uid-gone-2", false, 6)
	clk.Step(30*time.Second - podRelistGap)
	ask("uid-gone", false, 6) // list 6 did not have it either: it waits from there
	clk.Step(podRelistGap)
	ask("uid-gone", false, 7) // an interval after list 6: one list for both
	ask("uid-gone-2", false, 7)
	clk.Step(podRelistGap)
	ask("uid-gone-2", false, 7) // and both wait from list 7

	// A failed list is not a miss: a new pod is found at the next poll
	// after the relist gap, not an interval later.
	fail := true
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fail {
			lists++ // the counting reactor behind this one does not see it
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	if _, err := cs.CoreV1().Pods("ml").Create(ctx, pod("d", "uid-d"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ask("uid-d", false, 8)
	fail = false
	clk.Step(podRelistGap)
	ask("uid-d", true, 9)
}
