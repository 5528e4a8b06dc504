package webhook

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
)

// reviewSeeds are reviews that readReview must read as the two-step decode
// does: the API server's, and the ones its one pass must leave to the
// two-step decode (onePass false).
func reviewSeeds(t testing.TB) []struct {
	name    string
	body    string
	onePass bool
} {
	pod := string(review(t, vllmPod(), admissionv1.Create))
	req := `{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml",`
	return []struct {
		name    string
		body    string
		onePass bool
	}{
		{"api server", pod, true},
		{"update", string(review(t, vllmPod(), admissionv1.Update)), true},
		{"spaced", `{ "request" : ` + req + ` "object" : {"metadata":{"name":"p"}} } }`, true},
		{"string with an object key", `{"request":` + req + `"object":{"metadata":{"name":"\"object\":"}}}}`, true},
		{"colons in keys and values", `{"request":` + req + `"object":{"metadata":{"labels":{"a:b":"c:d","\":":":\""}}}}}`, true},
		{"colons in values", `{"request":` + req + `"object":{"metadata":{"labels":{"a:b":"c:\":d"}}}}}`, true},
		{"escaped key in the pod", `{"request":` + req + `"object":{"metadata":{"name":"x\\","labels":{"a\\":"\\"}}}}}`, true},
		{"escaped value", `{"request":` + req + `"object":{"metadata":{"name":"x\\","labels":{"a":"\\\""}}}}}`, true},
		{"capitalised request", strings.Replace(pod, `"request"`, `"Request"`, 1), false},
		{"capitalised uid", `{"request":{"UID":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"capitalised kind kind", `{"request":{"uid":"1","kind":{"version":"v1","Kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"kelvin sign", `{"request":{"uid":"1","` + "\u212a" + `ind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"escaped key", `{"request":{"\u0075id":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{}}}`, false},
		{"object twice", `{"request":` + req + `"object":{"metadata":{"name":"a"}},"object":{"spec":{}}}}`, false},
		{"object in a second request", `{"request":` + req + `"object":{"metadata":{"name":"a"}}},"request":{"object":{"spec":{}}}}`, false},
		{"null object", `{"request":` + req + `"object":null}}`, false},
		{"no object", `{"request":` + req[:len(req)-1] + `}}`, false},
		{"no request", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, false},
		{"object not a pod", `{"request":` + req + `"object":{"spec":{"containers":"nope"}}}}`, false},
		{"deployment", `{"request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{"spec":{"replicas":1,"template":{}}}}}`, true},
		{"deployment not a pod", `{"request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{"spec":{"containers":"nope"}}}}`, false},
		{"malformed", `{"request": {`, false},
		{"wrong field type", `{"request":{"uid":5}}`, false},
		{"rich pod", string(review(t, richPod(), admissionv1.Create)), true},
		{"escaped field name in the pod", `{"request":` + req + `"object":{"metadata":{"n\u0061me":"p"}}}}`, false},
		{"metadata twice", `{"request":` + req + `"object":{"metadata":{"name":"a"},"metadata":{"labels":{}}}}}`, false},
		{"label twice", `{"request":` + req + `"object":{"metadata":{"labels":{"a":"1","a":"2"}}}}}`, true},
		{"null label value", `{"request":` + req + `"object":{"metadata":{"labels":{"a":null},"annotations":null}}}}`, true},
		{"unicode escapes", `{"request":` + req + `"object":{"metadata":{"labels":{"\u00e9t\u00E9":"\u2028\/\b\f\n\r\t"}}}}}`, true},
		{"escaped surrogate", `{"request":` + req + `"object":{"metadata":{"name":"\ud83d\ude00"}}}}`, false},
		{"invalid UTF-8 in a label", `{"request":` + req + `"object":{"metadata":{"labels":{"a":"` + "\xff" + `"}}}}}`, false},
		{"invalid UTF-8 in a skipped field", `{"request":` + req + `"object":{"metadata":{"uid":"` + "\xff" + `"}}}}`, true},
		{"type error in a skipped field", `{"request":` + req + `"object":{"spec":{"containers":[{"name":"c","tty":"nope"}]}}}}`, true},
		{"type error in a read field", `{"request":` + req + `"object":{"spec":{"containers":[{"name":5}]}}}}`, false},
		{"quantity as a number", `{"request":` + req + `"object":{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":2,"memory":null}}}]}}}}`, true},
		{"bad quantity", `{"request":` + req + `"object":{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"2x"}}}]}}}}`, false},
		{"empty and null lists", `{"request":` + req + `"object":{"spec":{"containers":[],"initContainers":null,"volumes":[null,{"name":"v","emptyDir":{}}]}}}}`, true},
		{"null container", `{"request":` + req + `"object":{"spec":{"containers":[null,{"name":"c","env":[null,{"name":"A"}],"volumeMounts":[{"name":"m","readOnly":true,"recursiveReadOnly":null,"mountPropagation":"None"}]}]}}}}`, true},
		{"numbers skipped", `{"request":` + req + `"object":{"spec":{"priority":-0.5e+10,"x":[0,1.25,-3E2,true,false,null,{}]}}}}`, true},
		{"bad number", `{"request":` + req + `"object":{"spec":{"priority":01}}}}`, false},
		{"bad escape in a skipped string", `{"request":` + req + `"object":{"spec":{"x":"\q"}}}}`, false},
		{"trailing data", `{"request":` + req + `"object":{}}} x`, false},
		{"trailing white space", `{"request":` + req + `"object":{}}}` + " \n\t", true},
		{"deep nesting", `{"request":` + req + `"object":{"spec":{"x":` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `}}}}`, false},
		{"kind null", `{"request":{"uid":"1","kind":null,"operation":"CREATE","object":{}}}`, true},
	}
}

// richPod is a pod as the API server sends it, with most fields set: the
// ones onePass reads and many it skips.
func richPod() *corev1.Pod {
	p := vllmPod()
	p.Name, p.UID, p.ResourceVersion = "llama-8b-7d9f-x2x", "3f0c", ""
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "llama-8b-7d9f", UID: "77"}}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
		APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{".":{}}}}`)}}}
	p.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}` + "\n"
	p.Labels["unicode"] = "café"
	ro := corev1.RecursiveReadOnlyIfPossible
	c := &p.Spec.Containers[0]
	c.Env = []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: "LIM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}}}
	c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access-x", ReadOnly: true, RecursiveReadOnly: &ro, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}}
	c.Resources.Claims = []corev1.ResourceClaim{{Name: "gpu", Request: "one"}}
	c.TerminationMessagePath, c.ImagePullPolicy = "/dev/termination-log", corev1.PullIfNotPresent
	c.SecurityContext = &corev1.SecurityContext{RunAsNonRoot: new(bool)}
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8000)}}, PeriodSeconds: 10}
	p.Spec.InitContainers = []corev1.Container{{Name: "warmup", Image: "busybox", Command: []string{"sh", "-c", "true"},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}}
	p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "busybox"}}}
	p.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}}
	grace := int64(30)
	p.Spec.TerminationGracePeriodSeconds, p.Spec.RestartPolicy, p.Spec.DNSPolicy = &grace, corev1.RestartPolicyAlways, corev1.DNSClusterFirst
	p.Spec.Tolerations = []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &grace}}
	p.Spec.NodeSelector = map[string]string{"nvidia.com/gpu.present": "true"}
	return p
}

// TestReadReview: readReview takes the one pass exactly where it may.
func TestReadReview(t *testing.T) {
	for _, tc := range reviewSeeds(t) {
		t.Run(tc.name, func(t *testing.T) {
			checkReadReview(t, []byte(tc.body))
			r, err := readReview([]byte(tc.body))
			if onePass := err == nil && r.Request != nil && r.Request.pod != nil; onePass != tc.onePass {
				t.Errorf("one pass %v, want %v", onePass, tc.onePass)
			}
		})
	}
}

// FuzzReadReview: whatever the input, readReview's one pass reads what the
// two-step decode (encoding/json, then the object with sigs.k8s.io/json)
// reads.
func FuzzReadReview(f *testing.F) {
	for _, tc := range reviewSeeds(f) {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkReadReview(t, data) })
}

func checkReadReview(t *testing.T, data []byte) {
	t.Helper()
	got, err := readReview(data)
	if err != nil || got.Request == nil || got.Request.pod == nil {
		return // the two-step decode itself
	}
	var want reviewIn
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("one pass read %s, which encoding/json refuses: %v", data, err)
	}
	if want.Request == nil {
		t.Fatalf("one pass read a request in %s, encoding/json none", data)
	}
	w, g := *want.Request, *got.Request
	w.Object, g.pod = nil, nil
	if got.TypeMeta != want.TypeMeta || !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\none pass %+v %+v\ntwo steps %+v %+v", data, got.TypeMeta, g, want.TypeMeta, w)
	}
	// The pod: what sigs.k8s.io/json reads into the fields onePass reads.
	var lite litePod
	if err := kjson.UnmarshalCaseSensitivePreserveInts(want.Request.Object, &lite); err != nil {
		t.Fatalf("one pass read a pod in %s, sigs.k8s.io/json does not read its fields: %v", data, err)
	}
	if pod := lite.pod(); !reflect.DeepEqual(got.Request.pod, pod) {
		t.Fatalf("%s:\none pass %+v\nsigs.k8s.io/json %+v", data, got.Request.pod, pod)
	}
	// And, where the whole pod decodes, its fields onePass reads.
	var full corev1.Pod
	if kjson.UnmarshalCaseSensitivePreserveInts(want.Request.Object, &full) == nil {
		if sub := podSubset(&full); !reflect.DeepEqual(got.Request.pod, sub) {
			t.Fatalf("%s:\none pass %+v\nwhole pod's %+v", data, got.Request.pod, sub)
		}
	}
}

// litePod declares the fields onePass reads (PodFields) for
// sigs.k8s.io/json, the reference onePass is checked against.
type litePod struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers          []liteContainer `json:"containers"`
		InitContainers      []liteContainer `json:"initContainers"`
		EphemeralContainers []liteNamed     `json:"ephemeralContainers"`
		Volumes             []corev1.Volume `json:"volumes"`
		SchedulerName       string          `json:"schedulerName"`
		// What Pod Security reads.
		SecurityContext *corev1.PodSecurityContext `json:"securityContext"`
		OS              *corev1.PodOS              `json:"os"`
		HostNetwork     bool                       `json:"hostNetwork"`
		HostPID         bool                       `json:"hostPID"`
		HostIPC         bool                       `json:"hostIPC"`
		HostUsers       *bool                      `json:"hostUsers"`
	} `json:"spec"`
}

type liteContainer struct {
	Name            string                         `json:"name"`
	Env             []corev1.EnvVar                `json:"env"`
	VolumeMounts    []corev1.VolumeMount           `json:"volumeMounts"`
	Resources       corev1.ResourceRequirements    `json:"resources"`
	RestartPolicy   *corev1.ContainerRestartPolicy `json:"restartPolicy"`
	SecurityContext *corev1.SecurityContext        `json:"securityContext"`
	Ports           []corev1.ContainerPort         `json:"ports"`
	LivenessProbe   *corev1.Probe                  `json:"livenessProbe"`
	ReadinessProbe  *corev1.Probe                  `json:"readinessProbe"`
	StartupProbe    *corev1.Probe                  `json:"startupProbe"`
	Lifecycle       *corev1.Lifecycle              `json:"lifecycle"`
}

func (c *liteContainer) container() corev1.Container {
	return corev1.Container{Name: c.Name, Env: c.Env, VolumeMounts: c.VolumeMounts, Resources: c.Resources,
		RestartPolicy: c.RestartPolicy, SecurityContext: c.SecurityContext, Ports: c.Ports,
		LivenessProbe: c.LivenessProbe, ReadinessProbe: c.ReadinessProbe, StartupProbe: c.StartupProbe, Lifecycle: c.Lifecycle}
}

func liteOf(c *corev1.Container) liteContainer {
	return liteContainer{Name: c.Name, Env: c.Env, VolumeMounts: c.VolumeMounts, Resources: c.Resources,
		RestartPolicy: c.RestartPolicy, SecurityContext: c.SecurityContext, Ports: c.Ports,
		LivenessProbe: c.LivenessProbe, ReadinessProbe: c.ReadinessProbe, StartupProbe: c.StartupProbe, Lifecycle: c.Lifecycle}
}

type liteNamed struct {
	Name string `json:"name"`
}

func (l *litePod) pod() *corev1.Pod {
	m := &l.Metadata
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: m.Name, GenerateName: m.GenerateName, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations}}
	s := &l.Spec
	p.Spec.SchedulerName = s.SchedulerName
	p.Spec.SecurityContext, p.Spec.OS, p.Spec.HostUsers = s.SecurityContext, s.OS, s.HostUsers
	p.Spec.HostNetwork, p.Spec.HostPID, p.Spec.HostIPC = s.HostNetwork, s.HostPID, s.HostIPC
	containers := func(cs []liteContainer) []corev1.Container {
		return mapSlice(cs, func(c liteContainer) corev1.Container { return c.container() })
	}
	p.Spec.Containers, p.Spec.InitContainers = containers(l.Spec.Containers), containers(l.Spec.InitContainers)
	p.Spec.EphemeralContainers = mapSlice(l.Spec.EphemeralContainers, func(c liteNamed) corev1.EphemeralContainer {
		return corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: c.Name}}
	})
	p.Spec.Volumes = l.Spec.Volumes
	return p
}

// podSubset is p with only the fields onePass reads.
func podSubset(p *corev1.Pod) *corev1.Pod {
	var l litePod
	m := &l.Metadata
	m.Name, m.GenerateName, m.Namespace, m.Labels, m.Annotations = p.Name, p.GenerateName, p.Namespace, p.Labels, p.Annotations
	s := &l.Spec
	s.SchedulerName = p.Spec.SchedulerName
	s.SecurityContext, s.OS, s.HostUsers = p.Spec.SecurityContext, p.Spec.OS, p.Spec.HostUsers
	s.HostNetwork, s.HostPID, s.HostIPC = p.Spec.HostNetwork, p.Spec.HostPID, p.Spec.HostIPC
	containers := func(cs []corev1.Container) []liteContainer {
		return mapSlice(cs, func(c corev1.Container) liteContainer { return liteOf(&c) })
	}
	l.Spec.Containers, l.Spec.InitContainers = containers(p.Spec.Containers), containers(p.Spec.InitContainers)
	l.Spec.EphemeralContainers = mapSlice(p.Spec.EphemeralContainers, func(c corev1.EphemeralContainer) liteNamed { return liteNamed{c.Name} })
	l.Spec.Volumes = p.Spec.Volumes
	return l.pod()
}

// mapSlice maps s, nil to nil and empty to empty, as the decoders leave them.
func mapSlice[S, T any](s []S, f func(S) T) []T {
	if s == nil {
		return nil
	}
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}
