package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/randfill"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/mutate"
)

// TestPodInMutatesAsWholePod: for pods with every field filled at random
// (shaped so that the mutator injects, warns and refuses), the mutator
// answers the pod decodePod reads exactly as it answers the whole pod. A
// mutator that read a field podIn leaves out would fail here.
func TestPodInMutatesAsWholePod(t *testing.T) {
	m := loadMutator(t, "../mutate/testdata/config.yaml")
	ns := mutate.Namespace{Name: "ml", Labels: map[string]string{api.LabelInject: api.NamespaceInjectEnabled}}
	f := randfill.NewWithSeed(7).NilChance(0.2).NumElements(0, 3).Funcs(
		func(q *resource.Quantity, c randfill.Continue) {
			*q = *resource.NewQuantity(c.Int63n(1<<20), []resource.Format{resource.DecimalSI, resource.BinarySI}[c.Intn(2)])
		},
		func(f *metav1.FieldsV1, c randfill.Continue) { f.Raw = []byte(`{"f:spec":{}}`) },
		func(tm *metav1.Time, c randfill.Continue) { *tm = metav1.Unix(c.Int63n(1<<31), 0).Rfc3339Copy() },
		func(tm *metav1.MicroTime, c randfill.Continue) {
			*tm = metav1.NewMicroTime(metav1.Unix(c.Int63n(1<<31), 0).Time)
		},
	)
	counts := map[string]int{}
	for i := range 400 {
		var pod corev1.Pod
		f.Fill(&pod)
		shape(&pod, f, i)
		body := review(t, &pod, admissionv1.Create)
		read, err := decodePod(mustObject(t, body))
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		var whole corev1.Pod
		if err := kjson.UnmarshalCaseSensitivePreserveInts(mustObject(t, body), &whole); err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		got, kinds := answer(m, read, ns)
		want, _ := answer(m, &whole, ns)
		if got != want {
			t.Fatalf("pod %d: the mutator answers the pod decodePod reads\n%s\nand the whole pod\n%s\nreview: %s", i, got, want, body)
		}
		for _, k := range kinds {
			counts[k]++
		}
	}
	t.Logf("answers: %v", counts)
	for _, k := range []string{"patched", "refused", "warned"} {
		if counts[k] < 20 {
			t.Errorf("only %d of 400 pods were %s: the test no longer covers that path (%v)", counts[k], k, counts)
		}
	}
}

// shape makes a random pod one the mutator works on: opted in, a model and
// GPU memory asked for, and, at random, what makes it warn or refuse.
func shape(p *corev1.Pod, f *randfill.Filler, i int) {
	p.Namespace = "ml"
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	delete(p.Annotations, api.AnnotationStatus)
	delete(p.Labels, api.LabelInject)
	p.Annotations[api.AnnotationModelURI] = "hf://org/model-" + fmt.Sprint(i%7)
	if i%8 == 5 { // an image volume, no loader
		p.Annotations[api.AnnotationModelURI] = "oci://ghcr.io/org/model:" + fmt.Sprint(i%7)
	}
	delete(p.Annotations, api.AnnotationModelAllowPatterns)
	if i%3 == 1 {
		p.Annotations[api.AnnotationModelAllowPatterns] = "*.safetensors, config.json"
	}
	p.Annotations[api.AnnotationGPUMemory] = []string{"20Gi", "40Gi", "1Gi"}[i%3]
	for _, k := range []string{api.AnnotationContainer, api.AnnotationProfile, api.AnnotationTemplates, api.AnnotationGPUCount, api.AnnotationModelSecret} {
		delete(p.Annotations, k)
	}
	if i%4 == 1 {
		p.Annotations[api.AnnotationTemplates] = "metrics,proxy"
	}
	if i%5 == 2 {
		p.Annotations[api.AnnotationProfile] = "gpu"
	}
	if len(p.Spec.Containers) == 0 {
		p.Spec.Containers = make([]corev1.Container, 1)
		f.Fill(&p.Spec.Containers[0])
	}
	for j := range p.Spec.Containers {
		p.Spec.Containers[j].Name = fmt.Sprintf("c%d", j)
	}
	for j := range p.Spec.InitContainers {
		p.Spec.InitContainers[j].Name = fmt.Sprintf("i%d", j)
	}
	c := &p.Spec.Containers[0]
	switch i % 6 {
	case 0: // the user's MODEL_URI: replaced, with a warning
		c.Env = append(c.Env, corev1.EnvVar{Name: api.EnvModelURI, Value: "s3://other"})
	case 1: // a mount where the model goes: refused
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "x", MountPath: api.ModelMountPath})
	case 2: // GPU memory the annotation contradicts: refused
		if c.Resources.Limits == nil {
			c.Resources.Limits = corev1.ResourceList{}
		}
		c.Resources.Limits[api.ResourceGPUMemory] = resource.MustParse("7")
	case 3: // a name the webhook wants taken: renamed
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "mlplane-models"})
		p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "mlplane-model-loader"}})
	}
}

// answer is the mutator's answer as text, and what kind it is.
func answer(m *mutate.Mutator, p *corev1.Pod, ns mutate.Namespace) (string, []string) {
	res, err := m.Mutate(p, ns)
	var kinds []string
	if len(res.Warnings) > 0 {
		kinds = append(kinds, "warned")
	}
	if err != nil {
		return fmt.Sprintf("refused: %v\nwarnings: %q", err, res.Warnings), append(kinds, "refused")
	}
	patch, perr := json.Marshal(res.Patch)
	if len(res.Patch) > 0 {
		kinds = append(kinds, "patched")
	}
	return fmt.Sprintf("patch: %s %v\nwarnings: %q\nskipped: %q", patch, perr, res.Warnings, res.Skipped), kinds
}

func mustObject(t *testing.T, body []byte) []byte {
	t.Helper()
	var r reviewIn
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &r); err != nil || r.Request == nil {
		t.Fatalf("review %s: %v", body, err)
	}
	return r.Request.Object
}

// TestCaseVariantKeysCannotHideContainers: a key that equals a field's name
// but for case ("Containers" beside "containers") is dropped by the API
// server's decoder, which makes the pod from the exact key. The webhook
// reads the same pod, so such a key cannot hide a container from it: every
// container the API server creates gets NVIDIA_VISIBLE_DEVICES (the
// serving container its GPUs, the others "void"). A decoder that folds
// case, as encoding/json, goccy/go-json and sonic do, would take the last
// of the two keys and see fewer containers; each case checks that it
// would, so that the input really tries to hide one.
func TestCaseVariantKeysCannotHideContainers(t *testing.T) {
	pod := vllmPod()
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "miner", Image: "miner"})
	pod.Spec.InitContainers = []corev1.Container{{Name: "init-miner", Image: "miner"}}
	j := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	meta, inits, all, first := j(pod.ObjectMeta), j(pod.Spec.InitContainers), j(pod.Spec.Containers), j(pod.Spec.Containers[:1])
	spec := `"schedulerName":"default-scheduler","initContainers":` + inits + `,"containers":` + all
	h := newTestHandler(t, testNamespaces, HandlerOptions{})
	for _, tc := range []struct{ name, object string }{
		{"Containers after containers", `{"metadata":` + meta + `,"spec":{` + spec + `,"Containers":` + first + `}}`},
		{"CONTAINERS after containers", `{"metadata":` + meta + `,"spec":{` + spec + `,"CONTAINERS":` + first + `}}`},
		{"InitContainers after initContainers", `{"metadata":` + meta + `,"spec":{` + spec + `,"InitContainers":[]}}`},
		{"Spec after spec", `{"metadata":` + meta + `,"spec":{` + spec + `},"Spec":{"containers":` + first + `}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var apiServer, folded corev1.Pod
			if err := kjson.UnmarshalCaseSensitivePreserveInts([]byte(tc.object), &apiServer); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.object), &folded); err != nil {
				t.Fatal(err)
			}
			seen := func(p *corev1.Pod) int { return len(p.Spec.Containers) + len(p.Spec.InitContainers) }
			if seen(&apiServer) != 3 || seen(&folded) >= 3 {
				t.Fatalf("not a hiding case: the API server sees %d containers, encoding/json %d", seen(&apiServer), seen(&folded))
			}
			raw := j(pod)
			body := bytes.Replace(review(t, pod, admissionv1.Create), []byte(raw), []byte(tc.object), 1)
			if bytes.Contains(body, []byte(raw)) || !bytes.Contains(body, []byte(tc.object)) {
				t.Fatal("the object was not replaced in the review")
			}
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
			}
			r := decodeReview(t, rec.Body.Bytes())
			if !r.Allowed || len(r.Patch) == 0 {
				t.Fatalf("response %+v", r)
			}
			patch, err := jsonpatch.DecodePatch(r.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := patch.Apply([]byte(j(&apiServer)))
			if err != nil {
				t.Fatalf("the patch does not apply to the API server's pod: %v\n%s", err, r.Patch)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"init-miner": mutate.VisibleDevicesNone, mutate.LoaderContainerName: mutate.VisibleDevicesNone,
				"vllm": "fieldRef metadata.annotations['" + api.AnnotationGPUIDs + "']", "miner": mutate.VisibleDevicesNone}
			gotEnv := map[string]string{}
			for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
				gotEnv[c.Name] = "none"
				for _, e := range c.Env {
					if e.Name != api.EnvNvidiaVisibleDevices {
						continue
					}
					gotEnv[c.Name] = e.Value
					if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
						gotEnv[c.Name] = "fieldRef " + e.ValueFrom.FieldRef.FieldPath
					}
				}
			}
			if d := cmp.Diff(want, gotEnv); d != "" {
				t.Errorf("%s by container (-want +got):\n%s", api.EnvNvidiaVisibleDevices, d)
			}
		})
	}
}
