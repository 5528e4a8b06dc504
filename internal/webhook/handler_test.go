package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/mutate"
)

var testNamespaces = StaticNamespaces{"ml": {api.LabelInject: api.NamespaceInjectEnabled}}

// vllmPod is a typical vLLM server pod as the API server sends it.
func vllmPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "llama-8b-7d9f-", Namespace: "ml",
			Labels: map[string]string{"app": "llama-8b", "pod-template-hash": "7d9f"},
			Annotations: map[string]string{
				api.AnnotationModelURI:     "hf://meta-llama/Llama-3.1-8B-Instruct",
				api.AnnotationModelSecret:  "hf-token",
				api.AnnotationModelVersion: "3.1",
				api.AnnotationGPUMemory:    "40Gi",
			},
		},
		Spec: corev1.PodSpec{
			SchedulerName: corev1.DefaultSchedulerName,
			Containers: []corev1.Container{{
				Name: "vllm", Image: "vllm/vllm-openai:v0.6.3",
				Args:  []string{"--model", "/mnt/models", "--port", "8000"},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8000}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("24Gi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("48Gi")},
				},
			}},
		},
	}
}

func review(t testing.TB, pod *corev1.Pod, op admissionv1.Operation) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("0f6d5e2c-1111-4c3a-9a57-5d1f1b8c0b11"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: pod.Namespace, Operation: op,
			Object: runtime.RawExtension{Raw: raw},
			// What the API server sends along for a ReplicaSet's pod.
			UserInfo: authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:replicaset-controller",
				UID: "6a3c1f7e-7d0e-4a43-9c55-0b8f0f3c2d11", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}},
			Options: runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestHandler(t testing.TB, ns NamespaceLister, o HandlerOptions) *Handler {
	t.Helper()
	m, err := mutate.New(nil, mutate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return NewHandler(MutatorFunc(func() *mutate.Mutator { return m }), ns, o)
}

func post(t *testing.T, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func decodeReview(t *testing.T, b []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, b)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("response review: %s", b)
	}
	return out.Response
}

// TestHandlerMutates sends an AdmissionReview over HTTP, applies the JSON
// patch it gets back with evanphx/json-patch, and compares the pod.
func TestHandlerMutates(t *testing.T) {
	h := newTestHandler(t, testNamespaces, HandlerOptions{})
	srv := httptest.NewServer(h)
	defer srv.Close()

	pod := vllmPod()
	resp, body := post(t, srv.URL+Path, review(t, pod, admissionv1.Create))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	r := decodeReview(t, body)
	if !r.Allowed || r.UID != "0f6d5e2c-1111-4c3a-9a57-5d1f1b8c0b11" || r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v", r)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], `Secret "hf-token"`) {
		t.Errorf("warnings %q", r.Warnings)
	}
	patch, err := jsonpatch.DecodePatch(r.Patch)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(pod)
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("applying %s: %v", r.Patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}

	want := pod.DeepCopy()
	want.Labels[api.LabelModel] = "Llama-3.1-8B-Instruct"
	want.Labels[api.LabelModelVersion] = "3.1"
	want.Labels[api.LabelAppVersion] = "3.1"
	want.Annotations[api.AnnotationStatus] = `{"container":"vllm","profile":"default","loader":"mlplane-model-loader","modelVolume":"mlplane-models","gpuMemoryMiB":40960,"gpuCount":1}`
	want.Spec.SchedulerName = api.DefaultSchedulerName
	q := resource.MustParse
	no := false
	serving := &want.Spec.Containers[0]
	serving.Env = []corev1.EnvVar{
		{Name: api.EnvModelURI, Value: "hf://meta-llama/Llama-3.1-8B-Instruct"},
		{Name: api.EnvModelDir, Value: api.ModelMountPath},
		{Name: api.EnvModelManifest, Value: api.ModelMountPath + "/" + api.ModelManifestFile},
		{Name: api.EnvNvidiaVisibleDevices, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['mlplane.io/gpu-ids']"}}},
		{Name: api.EnvGPUMemoryMiB, Value: "40960"},
	}
	serving.VolumeMounts = []corev1.VolumeMount{{Name: "mlplane-models", MountPath: api.ModelMountPath, ReadOnly: true}}
	serving.Resources.Requests[api.ResourceGPUMemory] = q("40960")
	serving.Resources.Requests[corev1.ResourceEphemeralStorage] = q("1Gi") // the built-in default profile
	serving.Resources.Limits[api.ResourceGPUMemory] = q("40960")
	want.Spec.InitContainers = []corev1.Container{{
		Name: "mlplane-model-loader", Image: mutate.DefaultLoaderImage, ImagePullPolicy: corev1.PullIfNotPresent,
		Args: []string{"--uri=$(MODEL_URI)", "--dest=$(MODEL_DIR)"},
		Env: []corev1.EnvVar{
			{Name: api.EnvModelURI, Value: "hf://meta-llama/Llama-3.1-8B-Instruct"},
			{Name: api.EnvModelDir, Value: api.ModelMountPath},
			{Name: api.EnvNvidiaVisibleDevices, Value: "void"},
		},
		EnvFrom:      []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "hf-token"}, Optional: &no}}},
		VolumeMounts: []corev1.VolumeMount{{Name: "mlplane-models", MountPath: api.ModelMountPath}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{"cpu": q("500m"), "memory": q("1Gi"), "ephemeral-storage": q("1Gi")},
			Limits:   corev1.ResourceList{"memory": q("2Gi")},
		},
		SecurityContext: &corev1.SecurityContext{RunAsNonRoot: new(true), RunAsUser: new(int64(mutate.LoaderUser)), AllowPrivilegeEscalation: &no,
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
	}}
	want.Spec.Volumes = []corev1.Volume{{Name: "mlplane-models", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	if d := cmp.Diff(want, &got, cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })); d != "" {
		t.Errorf("patched pod (-want +got):\n%s", d)
	}
	if n := testutil.ToFloat64(h.metrics.requests[ResultMutated]); n != 1 {
		t.Errorf("mutated count %v", n)
	}
}

func TestHandlerAnswers(t *testing.T) {
	failing := NamespaceListerFunc(func(context.Context, string) (map[string]string, error) {
		return nil, errors.New("connection refused")
	})
	never := NamespaceListerFunc(func(_ context.Context, ns string) (map[string]string, error) {
		t.Errorf("namespace %s looked up", ns)
		return nil, nil
	})
	bad := vllmPod()
	bad.Annotations[api.AnnotationGPUMemory] = "lots"
	huge := vllmPod()
	huge.Annotations[api.AnnotationGPUMemory] = "8Ei"
	bare := vllmPod()
	bare.Annotations[api.AnnotationGPUMemory] = "40960"
	system := vllmPod()
	system.Namespace = "kube-system"
	plain := vllmPod()
	plain.Namespace = "plain"
	for _, tc := range []struct {
		name      string
		ns        NamespaceLister
		body      []byte
		allowed   bool
		patched   bool
		code      int32
		message   string
		result    string
		warnCount int
	}{
		{"denied", testNamespaces, review(t, bad, admissionv1.Create), false, false, http.StatusBadRequest,
			`annotation mlplane.io/gpu-memory: invalid value "lots": want a positive quantity of memory such as 20Gi or 16384Mi`, ResultDenied, 1},
		{"denied above one GPU", testNamespaces, review(t, huge, admissionv1.Create), false, false, http.StatusBadRequest,
			`annotation mlplane.io/gpu-memory: invalid value "8Ei": more than one GPU can have: want at most 1Ti (1048576Mi) per GPU`, ResultDenied, 1},
		{"denied bare number", testNamespaces, review(t, bare, admissionv1.Create), false, false, http.StatusBadRequest,
			`annotation mlplane.io/gpu-memory: invalid value "40960": a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI): write 40960Mi or 40Gi`, ResultDenied, 1},
		{"not opted in", testNamespaces, review(t, plain, admissionv1.Create), true, false, 0, "", ResultSkipped, 0},
		{"update", testNamespaces, review(t, vllmPod(), admissionv1.Update), true, false, 0, "", ResultSkipped, 0},
		{"system namespace without lookup", never, review(t, system, admissionv1.Create), true, false, 0, "", ResultSkipped, 0},
		{"namespace lookup fails", failing, review(t, vllmPod(), admissionv1.Create), false, false, http.StatusInternalServerError,
			"mlplane webhook: connection refused", ResultError, 0},
		// encoding/json matches keys case-insensitively; the API server
		// never sends such a review, but it is answered as always.
		{"capitalised keys", testNamespaces, bytes.Replace(bytes.Replace(review(t, vllmPod(), admissionv1.Create),
			[]byte(`"request"`), []byte(`"Request"`), 1), []byte(`"object"`), []byte(`"OBJECT"`), 1), true, true, 0, "", ResultMutated, 1},
		{"non-pod object", never, []byte(`{"request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","namespace":"ml","object":{"spec":{"containers":"nope"}}}}`),
			true, false, 0, "", ResultSkipped, 0},
		{"null object", testNamespaces, []byte(`{"request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml","object":null}}`),
			true, false, 0, "", ResultSkipped, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, tc.ns, HandlerOptions{})
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
			}
			r := decodeReview(t, rec.Body.Bytes())
			if r.Allowed != tc.allowed || (r.Patch != nil) != tc.patched || len(r.Warnings) != tc.warnCount {
				t.Fatalf("response %+v", r)
			}
			if tc.code != 0 && (r.Result == nil || r.Result.Code != tc.code || r.Result.Message != tc.message) {
				t.Fatalf("result %+v, want code %d message %q", r.Result, tc.code, tc.message)
			}
			if n := testutil.ToFloat64(h.metrics.requests[tc.result]); n != 1 {
				t.Errorf("%s count %v", tc.result, n)
			}
		})
	}
}

// TestHandlerBadRequests: requests that are not AdmissionReviews get an HTTP
// error with a message.
func TestHandlerBadRequests(t *testing.T) {
	h := newTestHandler(t, testNamespaces, HandlerOptions{MaxBodyBytes: 1024})
	big := review(t, func() *corev1.Pod {
		p := vllmPod()
		p.Annotations["padding"] = strings.Repeat("x", 2048)
		return p
	}(), admissionv1.Create)
	for _, tc := range []struct {
		name        string
		method      string
		contentType string
		body        []byte
		code        int
		message     string
	}{
		{"malformed JSON", http.MethodPost, "application/json", []byte(`{"request": {`), http.StatusBadRequest,
			"malformed AdmissionReview: unexpected end of JSON input"},
		{"not an object", http.MethodPost, "application/json", []byte(`[1,2]`), http.StatusBadRequest,
			"malformed AdmissionReview: the review: unexpected JSON array"},
		{"wrong field type", http.MethodPost, "application/json", []byte(`{"request":{"uid":5}}`), http.StatusBadRequest,
			"malformed AdmissionReview: request.uid: unexpected JSON number"},
		{"no request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest,
			"malformed AdmissionReview: no request"},
		{"object not a pod", http.MethodPost, "application/json",
			[]byte(`{"request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml","object":{"spec":{"containers":"nope"}}}}`),
			http.StatusBadRequest, "malformed AdmissionReview: request.object is not a Pod: json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container"},
		{"no object", http.MethodPost, "application/json",
			[]byte(`{"request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml"}}`),
			http.StatusBadRequest, "malformed AdmissionReview: request.object is not a Pod: unexpected end of JSON input"},
		{"oversized", http.MethodPost, "application/json", big, http.StatusRequestEntityTooLarge,
			"request body too large: the limit is 1024 bytes"},
		{"wrong content type", http.MethodPost, "text/plain", []byte(`{}`), http.StatusUnsupportedMediaType,
			`Content-Type "text/plain" is not supported: want application/json`},
		{"GET", http.MethodGet, "application/json", nil, http.StatusMethodNotAllowed, "method GET is not allowed: want POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, Path, bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code || strings.TrimSpace(rec.Body.String()) != tc.message {
				t.Fatalf("HTTP %d %q, want %d %q", rec.Code, rec.Body.String(), tc.code, tc.message)
			}
		})
	}
	// The oversized body is refused even when its length is not announced.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, Path, io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked oversized body: HTTP %d %s", rec.Code, rec.Body)
	}
	if n := testutil.ToFloat64(h.metrics.requests[ResultBadRequest]); n != 10 {
		t.Errorf("bad_request count %v, want 10", n)
	}

	// A wrong type in a field the webhook does not read is not reported:
	// the pod is mutated, and the API server validates it afterwards.
	odd := strings.Replace(string(review(t, vllmPod(), admissionv1.Create)), `"image":"vllm/vllm-openai:v0.6.3"`, `"image":5`, 1)
	if !strings.Contains(odd, `"image":5`) {
		t.Fatal("no image in the review")
	}
	rec = httptest.NewRecorder()
	req = httptest.NewRequest(http.MethodPost, Path, strings.NewReader(odd))
	req.Header.Set("Content-Type", "application/json")
	newTestHandler(t, testNamespaces, HandlerOptions{}).ServeHTTP(rec, req)
	if resp := decodeReview(t, rec.Body.Bytes()); rec.Code != http.StatusOK || !resp.Allowed || len(resp.Patch) == 0 {
		t.Fatalf("pod with a number for an image: HTTP %d %s", rec.Code, rec.Body)
	}
}

func BenchmarkHandler(b *testing.B) {
	h := newTestHandler(b, testNamespaces, HandlerOptions{})
	body := review(b, vllmPod(), admissionv1.Create)
	req := httptest.NewRequest(http.MethodPost, Path, nil)
	req.Header.Set("Content-Type", "application/json")
	rd := bytes.NewReader(body)
	w := &discardResponse{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		req.ContentLength = int64(len(body))
		w.code = 0
		h.ServeHTTP(w, req)
		if w.code != 0 && w.code != http.StatusOK {
			b.Fatalf("HTTP %d", w.code)
		}
	}
}

// discardResponse is a ResponseWriter that keeps nothing, so the benchmark
// measures the handler, not a recorder.
type discardResponse struct {
	h    http.Header
	code int
}

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardResponse) WriteHeader(code int)        { d.code = code }

// TestHandlerPolicies: the namespace's ResourceQuotas reach the mutator (a
// quota that counts limits.cpu denies the loader, which the built-in
// config gives no cpu limit), and a failed lookup is an internal error.
func TestHandlerPolicies(t *testing.T) {
	quota := corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "compute", Namespace: "ml"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceLimitsCPU: resource.MustParse("10")}}}
	for _, tc := range []struct {
		name     string
		policies PolicyLister
		code     int32
		message  string
	}{
		{"quota", PolicyListerFunc(func(context.Context, string) ([]corev1.LimitRange, []corev1.ResourceQuota, error) {
			return nil, []corev1.ResourceQuota{quota}, nil
		}), http.StatusBadRequest, `annotation mlplane.io/model-uri: the model loader: container "mlplane-model-loader" sets no limits.cpu, which ResourceQuota "compute" of namespace ml requires of every container (it counts limits.cpu); neither the InjectionConfig, the profile "default" nor a LimitRange of the namespace gives it one: set it in the profile or the InjectionConfig, or give the namespace a LimitRange default`},
		{"lookup fails", PolicyListerFunc(func(context.Context, string) ([]corev1.LimitRange, []corev1.ResourceQuota, error) {
			return nil, nil, errors.New("listing the ResourceQuotas of namespace ml: timeout")
		}), http.StatusInternalServerError, "mlplane webhook: listing the ResourceQuotas of namespace ml: timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, testNamespaces, HandlerOptions{Policies: tc.policies})
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(review(t, vllmPod(), admissionv1.Create)))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, req)
			r := decodeReview(t, rec.Body.Bytes())
			if r.Allowed || r.Result == nil || r.Result.Code != tc.code || r.Result.Message != tc.message {
				t.Fatalf("response %+v, want code %d message %q", r.Result, tc.code, tc.message)
			}
		})
	}
}

// TestHandlerEphemeralContainers: an update of pods/ephemeralcontainers
// (kubectl debug) of a GPU pod the webhook mutated gets a patch that gives
// the new container NVIDIA_VISIBLE_DEVICES=void; other updates of the pod
// are left alone.
func TestHandlerEphemeralContainers(t *testing.T) {
	h := newTestHandler(t, testNamespaces, HandlerOptions{})
	m, err := mutate.New(nil, mutate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pod := vllmPod()
	res, err := m.Mutate(pod, mutate.Namespace{Name: "ml", Labels: testNamespaces["ml"]})
	if err != nil {
		t.Fatal(err)
	}
	if pod, err = mutate.Apply(pod, res.Patch); err != nil {
		t.Fatal(err)
	}
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "nvidia/cuda:12.4.1-base-ubuntu22.04"}}}
	for _, tc := range []struct {
		subResource string
		patch       string
	}{
		{EphemeralContainers, `[{"op":"add","path":"/spec/ephemeralContainers/0/env","value":[{"name":"NVIDIA_VISIBLE_DEVICES","value":"void"}]}]`},
		{"", ""},
		{"status", ""},
	} {
		body := review(t, pod, admissionv1.Update)
		body = bytes.Replace(body, []byte(`"operation":"UPDATE"`), []byte(`"subResource":"`+tc.subResource+`","operation":"UPDATE"`), 1)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		r := decodeReview(t, rec.Body.Bytes())
		if !r.Allowed || string(r.Patch) != tc.patch {
			t.Errorf("subresource %q: allowed %v, patch %s, want %s", tc.subResource, r.Allowed, r.Patch, tc.patch)
		}
	}
}

// TestReadReviewPaths: readReview reads what the API server sends in one
// pass, and anything else the older way, so that each keeps the answer it
// had: keys in another case, a null object, an object that is not a pod.
func TestReadReviewPaths(t *testing.T) {
	capitalised := bytes.Replace(review(t, vllmPod(), admissionv1.Create), []byte(`"request"`), []byte(`"Request"`), 1)
	for _, tc := range []struct {
		name    string
		body    []byte
		onePass bool
	}{
		{"as the API server sends it", review(t, vllmPod(), admissionv1.Create), true},
		{"capitalised keys", capitalised, false},
		{"null object", []byte(`{"request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml","object":null}}`), false},
		{"not a pod", []byte(`{"request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{"spec":{"containers":"nope"}}}}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := readReview(tc.body)
			if err != nil || r.Request == nil {
				t.Fatalf("readReview = %+v, %v", r, err)
			}
			if got := r.Request.pod != nil; got != tc.onePass {
				t.Errorf("read in one pass: %v, want %v", got, tc.onePass)
			}
			if r.Request.UID != "1" && r.Request.UID != "0f6d5e2c-1111-4c3a-9a57-5d1f1b8c0b11" {
				t.Errorf("uid %q", r.Request.UID)
			}
		})
	}
}
