package validation

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	podutil "k8s.io/kubernetes/pkg/api/pod"
	"k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install" // the v1 defaults and conversions
	corevalidation "k8s.io/kubernetes/pkg/apis/core/validation"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/randfill"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/mutate"
)

// The property (issue 14): for a random pod that the API server accepts
// (defaulted and validated by its own code) in a namespace whose Pod
// Security level it passes, the webhook either denies it with a message,
// or returns a patch that applies (with the API server's JSON patch
// library), whose result, defaulted again as the API server does after a
// webhook, passes the API server's validation and the namespace's Pod
// Security level, and which a second mutation leaves alone.

// FuzzMutateValid is the property over pods filled by randfill (the
// library Kubernetes' own fuzzers use) from the fuzzer's bytes. Run it with
//
//	cd test/validation && go test -run '^$' -fuzz FuzzMutateValid
func FuzzMutateValid(f *testing.F) {
	for seed := range uint64(16) {
		f.Add(seedBytes(seed))
	}
	c := newChecker(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c.check(t, data)
	})
}

// TestMutateValidPods is FuzzMutateValid's property over a fixed set of
// random pods, in every `go test`. It fails if too few of them are valid
// and mutated for the property to mean anything.
func TestMutateValidPods(t *testing.T) {
	const n = 600
	c := newChecker(t)
	for seed := range uint64(n) {
		c.check(t, seedBytes(seed))
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
	}
	t.Logf("%d random pods: %v", n, c.counts)
	if c.counts["mutated"] < n/4 || c.counts["denied"] < n/50 {
		t.Errorf("too few pods reached the property (%v): the generator no longer makes valid pods the webhook works on", c.counts)
	}
}

// seedBytes are random bytes from seed, for randfill.NewFromGoFuzz.
func seedBytes(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 14))
	b := make([]byte, 512)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

type checker struct {
	mutators []*mutate.Mutator
	psa      policy.Evaluator
	counts   map[string]int
}

func newChecker(t testing.TB) *checker {
	c := &checker{counts: map[string]int{}}
	// The golden cases' config, and the same with the node cache (a
	// hostPath volume, beyond baseline).
	data, err := os.ReadFile("../../internal/mutate/testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, cache := range []bool{false, true} {
		cfg, err := mutate.LoadConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		if cache {
			cfg.Loader.Cache = &mutate.LoaderCache{HostPath: "/var/lib/mlplane/model-cache"}
		}
		m, err := mutate.New(cfg, mutate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c.mutators = append(c.mutators, m)
	}
	if c.psa, err = policy.NewEvaluator(policy.DefaultChecks(), nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *checker) check(t *testing.T, data []byte) {
	t.Helper()
	f := randfill.NewFromGoFuzz(data).NilChance(0).Funcs(fillPod, fillContainer)
	var pod corev1.Pod
	f.Fill(&pod)
	var choice [2]uint8
	f.Fill(&choice)
	m := c.mutators[int(choice[0])%len(c.mutators)]

	// The input, as the API server admits it.
	legacyscheme.Scheme.Default(&pod)
	if errs := validate(&pod); errs != "" {
		c.counts["invalid"]++
		return
	}
	// A namespace opted in, enforcing a Pod Security level the pod passes
	// (none, or baseline or restricted).
	levels := []psaapi.Level{psaapi.LevelPrivileged}
	for _, l := range []psaapi.Level{psaapi.LevelBaseline, psaapi.LevelRestricted} {
		if c.passes(psaapi.LevelVersion{Level: l, Version: psaapi.LatestVersion()}, &pod) {
			levels = append(levels, l)
		}
	}
	enforce := psaapi.LevelVersion{Level: levels[int(choice[1])%len(levels)], Version: psaapi.LatestVersion()}
	labels := map[string]string{api.LabelInject: api.NamespaceInjectEnabled}
	if enforce.Level != psaapi.LevelPrivileged {
		labels[psaapi.EnforceLevelLabel] = string(enforce.Level)
	}
	ns := mutate.Namespace{Name: pod.Namespace, Labels: labels}
	res, err := m.Mutate(pod.DeepCopy(), ns)
	switch {
	case err != nil && err.Error() == "":
		t.Fatal("denied without a message")
	case err != nil:
		c.counts["denied"]++
		if testing.Verbose() {
			t.Logf("denied: %v", err)
		}
		return
	case len(res.Patch) == 0:
		c.counts["left alone"]++
		return
	}
	c.counts["mutated"]++
	patch, err := json.Marshal(res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(&pod)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("the patch does not decode: %v\n%s", err, patch)
	}
	if doc, err = p.Apply(doc); err != nil {
		t.Fatalf("the patch does not apply: %v\npod: %s\npatch: %s", err, doc, patch)
	}
	var out corev1.Pod
	if err := kjson.UnmarshalCaseSensitivePreserveInts(doc, &out); err != nil {
		t.Fatal(err)
	}
	legacyscheme.Scheme.Default(&out)
	if errs := validate(&out); errs != "" {
		t.Fatalf("the mutated pod is invalid: %s\ninput: %s\npatch: %s", errs, mustJSON(&pod), patch)
	}
	if !c.passes(enforce, &out) {
		t.Fatalf("the mutated pod fails Pod Security %s, which the input passes\ninput: %s\npatch: %s", enforce, mustJSON(&pod), patch)
	}
	again, err := m.Mutate(&out, ns)
	if err != nil || len(again.Patch) > 0 {
		t.Fatalf("a second mutation: %v %s\ninput: %s", err, mustJSON(again.Patch), mustJSON(&pod))
	}
}

// validate runs the API server's checks of a pod create on p (defaulted):
// the pod-level defaults the create strategy applies, then
// ValidatePodCreate with the options the strategy gives it.
func validate(p *corev1.Pod) string {
	var in core.Pod
	if err := legacyscheme.Scheme.Convert(p, &in, nil); err != nil {
		return err.Error()
	}
	podutil.DefaultPodLevelResources(&in)
	opts := podutil.GetValidationOptionsFromPodSpecAndMeta(&in.Spec, nil, &in.ObjectMeta, nil)
	opts.ResourceIsPod = true
	if errs := corevalidation.ValidatePodCreate(&in, opts); len(errs) > 0 {
		return errs.ToAggregate().Error()
	}
	return ""
}

func (c *checker) passes(lv psaapi.LevelVersion, p *corev1.Pod) bool {
	return policy.AggregateCheckResults(c.psa.EvaluatePod(lv, &p.ObjectMeta, &p.Spec)).Allowed
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// pick returns one of xs.
func pick[T any](c randfill.Continue, xs ...T) T { return xs[c.Intn(len(xs))] }

// fillPod fills a pod a user could write for the webhook: mlplane's
// annotations with good and bad values, a few containers, init containers
// (native sidecars among them) and volumes, host networking, pod-level
// resources, Pod Security relevant fields, Windows. What the API server
// rejects is filtered out by its validation.
func fillPod(p *corev1.Pod, c randfill.Continue) {
	*p = corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ml"}}
	p.Labels = pick(c, map[string]string(nil), map[string]string{"app": "a"}, map[string]string{api.LabelModel: "mine"})
	ann := map[string]string{}
	for key, values := range map[string][]string{
		api.AnnotationModelURI:         {"hf://org/model", "s3://bucket/m", "pvc://claim/m", "oci://ghcr.io/o/m:1"},
		api.AnnotationGPUMemory:        {"10Gi", "1.5Gi", "20Gi"},
		api.AnnotationTemplates:        {"metrics", "proxy", "metrics,proxy"},
		api.AnnotationProfile:          {"gpu", "default"},
		api.AnnotationContainer:        {"c1", "c0"},
		api.AnnotationDefaultContainer: {"c1", "c2"},
		api.AnnotationModelSecret:      {"creds"},
	} {
		if c.Intn(3) == 0 {
			ann[key] = pick(c, values...)
		}
	}
	if _, ok := ann[api.AnnotationGPUMemory]; ok && c.Intn(3) == 0 {
		ann[api.AnnotationGPUCount] = "2"
	}
	if c.Intn(4) > 0 { // most pods ask for a model
		ann[api.AnnotationModelURI] = pick(c, "hf://org/model", "s3://bucket/m", "pvc://claim/m")
	}
	if c.Intn(20) == 0 { // and a few have a bad value
		key, bad := pick(c, [2]string{api.AnnotationModelURI, "ftp://x/y"}, [2]string{api.AnnotationGPUMemory, "lots"},
			[2]string{api.AnnotationProfile, "huge"}, [2]string{api.AnnotationContainer, "nope"})[0], ""
		_ = bad
		ann[key] = map[string]string{api.AnnotationModelURI: "ftp://x/y", api.AnnotationGPUMemory: "lots", api.AnnotationProfile: "huge", api.AnnotationContainer: "nope"}[key]
	}
	p.Annotations = ann

	s := &p.Spec
	for i := range c.Intn(4) {
		v := corev1.Volume{Name: pick(c, fmt.Sprintf("v%d", i), mutate.ModelVolumeName, "kube-api-access-x1y2z")}
		if slices.ContainsFunc(s.Volumes, func(o corev1.Volume) bool { return o.Name == v.Name }) {
			continue
		}
		switch c.Intn(5) {
		case 0:
			v.EmptyDir = &corev1.EmptyDirVolumeSource{}
		case 1:
			v.ConfigMap = &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}
		case 2:
			v.HostPath = &corev1.HostPathVolumeSource{Path: "/data"}
		case 3:
			v.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim"}
		default: // as the ServiceAccount admission plugin adds it
			v.Projected = &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}
			s.ServiceAccountName = "default"
		}
		s.Volumes = append(s.Volumes, v)
	}
	s.Containers = make([]corev1.Container, 1+c.Intn(3))
	for i := range s.Containers {
		c.Fill(&s.Containers[i])
		s.Containers[i].Name = fmt.Sprintf("c%d", i)
	}
	s.InitContainers = make([]corev1.Container, c.Intn(3))
	for i := range s.InitContainers {
		ic := &s.InitContainers[i]
		c.Fill(ic)
		ic.Name = fmt.Sprintf("i%d", i)
		if c.Intn(2) == 0 {
			always := corev1.ContainerRestartPolicyAlways
			ic.RestartPolicy = &always
		} else {
			ic.Ports = nil
		}
	}
	// Mounts name the pod's volumes.
	for _, cs := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range cs {
			mounts := cs[i].VolumeMounts[:0]
			for j, vm := range cs[i].VolumeMounts {
				if len(s.Volumes) > 0 {
					vm.Name = s.Volumes[(i+j)%len(s.Volumes)].Name
					mounts = append(mounts, vm)
				}
			}
			cs[i].VolumeMounts = mounts
		}
	}
	s.HostNetwork = c.Intn(5) == 0
	s.RestartPolicy = pick(c, corev1.RestartPolicyAlways, corev1.RestartPolicyNever)
	switch c.Intn(4) {
	case 0:
		s.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: new(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	case 1:
		s.SecurityContext = &corev1.PodSecurityContext{RunAsUser: new(int64(0))}
	}
	if c.Intn(5) == 0 {
		s.Resources = &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(pick(c, "250m", "4"))},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse(pick(c, "1Gi", "64Gi"))},
		}
	}
	if c.Intn(12) == 0 {
		s.OS = &corev1.PodOS{Name: corev1.Windows}
		s.SecurityContext, s.Resources = nil, nil
		for _, cs := range [][]corev1.Container{s.InitContainers, s.Containers} {
			for i := range cs {
				if cs[i].SecurityContext != nil {
					cs[i].SecurityContext = &corev1.SecurityContext{RunAsNonRoot: new(true)}
				}
			}
		}
	}
}

// fillContainer fills a container from a few realistic values of each
// field the mutation reads.
func fillContainer(ctr *corev1.Container, c randfill.Continue) {
	*ctr = corev1.Container{Image: "img:1"}
	for range c.Intn(3) {
		port := corev1.ContainerPort{ContainerPort: pick[int32](c, 8000, 8080, 9400), Protocol: pick(c, corev1.ProtocolTCP, corev1.ProtocolUDP)}
		if c.Intn(4) == 0 {
			port.HostPort = port.ContainerPort
		}
		ctr.Ports = append(ctr.Ports, port)
	}
	for range c.Intn(3) {
		e := corev1.EnvVar{Name: pick(c, "A", api.EnvModelDir, api.EnvNvidiaVisibleDevices, api.EnvModelURI), Value: pick(c, "x", "$(MODEL_DIR)", "all")}
		if !slices.ContainsFunc(ctr.Env, func(o corev1.EnvVar) bool { return o.Name == e.Name }) {
			ctr.Env = append(ctr.Env, e)
		}
	}
	for range c.Intn(3) {
		m := corev1.VolumeMount{MountPath: pick(c, "/data", api.ModelMountPath, "/cache", "/var/run/secrets/kubernetes.io/serviceaccount")}
		if !slices.ContainsFunc(ctr.VolumeMounts, func(o corev1.VolumeMount) bool { return o.MountPath == m.MountPath }) {
			ctr.VolumeMounts = append(ctr.VolumeMounts, m)
		}
	}
	quantities := map[corev1.ResourceName][]string{
		corev1.ResourceCPU:              {"0.0005", "100m", "2"},
		corev1.ResourceMemory:           {"256Mi", "8Gi"},
		corev1.ResourceEphemeralStorage: {"1Gi"},
		api.ResourceGPUMemory:           {"10240", "20480"},
		"nvidia.com/gpu":                {"1"},
	}
	for name, values := range quantities {
		if extended := strings.Contains(string(name), "/"); extended {
			// Not overcommitable: a limit, and a request only equal to it.
			if c.Intn(4) == 0 {
				q := resource.MustParse(pick(c, values...))
				if ctr.Resources.Limits == nil {
					ctr.Resources.Limits = corev1.ResourceList{}
				}
				ctr.Resources.Limits[name] = q
				if c.Intn(2) == 0 {
					if ctr.Resources.Requests == nil {
						ctr.Resources.Requests = corev1.ResourceList{}
					}
					ctr.Resources.Requests[name] = q
				}
			}
			continue
		}
		// values are in increasing order: a request at most its limit.
		req, lim := c.Intn(len(values)+1)-1, c.Intn(len(values)+1)-1
		if req >= 0 && c.Intn(2) == 0 {
			if ctr.Resources.Requests == nil {
				ctr.Resources.Requests = corev1.ResourceList{}
			}
			ctr.Resources.Requests[name] = resource.MustParse(values[req])
		}
		if lim >= 0 && lim >= req && c.Intn(2) == 0 {
			if ctr.Resources.Limits == nil {
				ctr.Resources.Limits = corev1.ResourceList{}
			}
			ctr.Resources.Limits[name] = resource.MustParse(values[lim])
		}
	}
	switch c.Intn(4) {
	case 0:
		ctr.SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: new(false), RunAsNonRoot: new(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	case 1: // beyond baseline (privileged containers the API server refuses by default)
		ctr.SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
	}
}
