package gpu

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/mlplane/mlplane/internal/api"
)

// TestRESTAPI checks the requests the trimmed REST client sends, the way a
// real API server sees them.
func TestRESTAPI(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Content-Type")+" "+strings.TrimSpace(string(body)))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/apis/coordination.k8s.io/v1/namespaces/mlplane-system/leases/"):
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: 404})
		case strings.Contains(r.URL.Path, "/leases"):
			_, _ = w.Write(body) // echo the Lease
		case strings.HasPrefix(r.URL.Path, "/api/v1/nodes/"):
			_ = json.NewEncoder(w).Encode(corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "42"}})
		case r.URL.Path == "/api/v1/pods":
			_ = json.NewEncoder(w).Encode(corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
				Items: []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"}}}})
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer srv.Close()

	c, err := NewRESTAPI(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := c.PatchNode(ctx, "n1", types.MergePatchType, []byte(`{"status":{}}`), "status")
	if err != nil || n.ResourceVersion != "42" {
		t.Fatalf("PatchNode = %v, %v", n, err)
	}
	if _, err := c.GetLease(ctx, api.LeaseNamespace, api.LeaseName("n1")); !apierrors.IsNotFound(err) {
		t.Errorf("GetLease error = %v, want NotFound", err)
	}
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: api.LeaseName("n1"), Namespace: api.LeaseNamespace}}
	if out, err := c.CreateLease(ctx, l); err != nil || out.Name != l.Name {
		t.Errorf("CreateLease = %v, %v", out, err)
	}
	if _, err := c.UpdateLease(ctx, l); err != nil {
		t.Errorf("UpdateLease: %v", err)
	}
	pods, err := c.ListPods(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=n1", ResourceVersion: "0"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].UID != "u1" {
		t.Errorf("ListPods = %v, %v", pods, err)
	}
	lease := `{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"mlplane-gpu-n1","namespace":"mlplane-system"},"spec":{}}`
	want := []string{
		`PATCH /api/v1/nodes/n1/status?fieldManager=mlplane application/merge-patch+json {"status":{}}`,
		`GET /apis/coordination.k8s.io/v1/namespaces/mlplane-system/leases/mlplane-gpu-n1?  `,
		`POST /apis/coordination.k8s.io/v1/namespaces/mlplane-system/leases?fieldManager=mlplane application/json ` + lease,
		`PUT /apis/coordination.k8s.io/v1/namespaces/mlplane-system/leases/mlplane-gpu-n1?fieldManager=mlplane application/json ` + lease,
		`GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn1&resourceVersion=0  `,
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}
