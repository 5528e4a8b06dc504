// Package mutate decides what an ML pod becomes: it turns a pod's mlplane.io
// annotations and the admin's InjectionConfig into a JSON patch (model loader,
// model volume, GPU wiring, sidecars, resource defaults). It is pure: no
// clients, no clocks, no globals set from configuration; the webhook server
// and the `webhook inject` command both call it.
package mutate

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/mlplane/mlplane/internal/api"
)

// Names of what the webhook adds; a numeric suffix makes them unique in a pod.
const (
	// LoaderContainerName is the model-loader init container's base name.
	LoaderContainerName = "mlplane-model-loader"
	// ModelVolumeName is the model volume's base name.
	ModelVolumeName = "mlplane-models"
	// CacheVolumeName is the base name of the node cache's hostPath volume.
	CacheVolumeName = "mlplane-model-cache"
	// VisibleDevicesNone is what non-serving containers of a GPU pod get in
	// NVIDIA_VISIBLE_DEVICES: the NVIDIA runtime then treats them as
	// non-GPU containers, even on legacy CUDA images.
	VisibleDevicesNone = "void"
)

// Why a pod was left alone (Result.Skipped).
const (
	SkipExcludedNamespace = "namespace is excluded"
	SkipOptedOut          = "pod opted out"
	SkipNotOptedIn        = "pod is not opted in"
	SkipAlreadyMutated    = "pod is already mutated"
	SkipNoContainers      = "pod has no containers"
	SkipNotMutated        = "pod was not mutated when it was created"
)

// Namespace is what the mutator needs to know of the pod's namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
	// LimitRanges and ResourceQuotas of the namespace, which the API server
	// applies to the containers mlplane adds too (policies.go); nil when
	// unknown (offline).
	LimitRanges    []corev1.LimitRange
	ResourceQuotas []corev1.ResourceQuota
}

// Options configure a Mutator.
type Options struct {
	// Namespace is the webhook's own namespace, never mutated. Default
	// api.DefaultNamespace.
	Namespace string
}

// Op is one RFC 6902 JSON patch operation. The mutator only adds and
// replaces.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Result is the outcome of a mutation that was not denied.
type Result struct {
	// Patch turns the pod into the mutated pod; empty when Skipped is set.
	// Its values may share memory with the pod and the config: marshal or
	// apply them, never modify them.
	Patch []Op
	// Warnings are for questionable but legal input; they are returned to
	// the client as admission warnings.
	Warnings []string
	// Injected summarises what was done; nil when Skipped is set. It is also
	// recorded in the api.AnnotationStatus annotation.
	Injected *Status
	// Skipped says why the pod was left alone, or is empty.
	Skipped string
}

// Status is the value of api.AnnotationStatus (as JSON).
type Status struct {
	Container    string   `json:"container"`
	Profile      string   `json:"profile"`
	Loader       string   `json:"loader,omitempty"`
	ModelVolume  string   `json:"modelVolume,omitempty"`
	CacheVolume  string   `json:"cacheVolume,omitempty"`
	GPUMemoryMiB int64    `json:"gpuMemoryMiB,omitempty"`
	GPUCount     int      `json:"gpuCount,omitempty"`
	Sidecars     []string `json:"sidecars,omitempty"`
	// GPUInitContainers are the init containers that request
	// api.ResourceGPUMemory themselves and so get the pod's GPUs, as the
	// serving container does.
	GPUInitContainers []string `json:"gpuInitContainers,omitempty"`
}

// Mutator applies one validated InjectionConfig. It is immutable and safe for
// concurrent use; a config reload builds a new one.
type Mutator struct {
	cfg           *InjectionConfig
	excluded      sets.Set[string]
	profiles      map[string]*Profile
	profileNames  string
	templates     map[string]*Template
	templateNames string
	scheduler     string
	// loaderEnv are the loader's env vars that come from the config.
	loaderEnv []corev1.EnvVar
	// cache is the node cache's volume source; nil without Loader.Cache.
	cache *corev1.HostPathVolumeSource
}

// New builds a Mutator from a defaulted config (nil means DefaultConfig) and
// rejects an invalid one with every problem listed.
func New(cfg *InjectionConfig, o Options) (*Mutator, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if errs := Validate(cfg); len(errs) > 0 {
		return nil, fmt.Errorf("invalid %s: %w", ConfigKind, errs.ToAggregate())
	}
	if o.Namespace == "" {
		o.Namespace = api.DefaultNamespace
	}
	m := &Mutator{
		cfg:       cfg,
		excluded:  sets.New(api.SystemNamespaces...).Insert(o.Namespace, api.NodeAgentNamespace).Insert(cfg.ExcludedNamespaces...),
		profiles:  make(map[string]*Profile, len(cfg.Profiles)),
		templates: make(map[string]*Template, len(cfg.Templates)),
	}
	if cfg.SchedulerName != nil {
		m.scheduler = *cfg.SchedulerName
	}
	if q := cfg.Loader.VolumeSizeLimit; q != nil {
		m.loaderEnv = append(m.loaderEnv, corev1.EnvVar{Name: api.EnvLoaderVolumeSize, Value: q.String()})
	}
	if c := cfg.Loader.Cache; c != nil {
		t := corev1.HostPathDirectoryOrCreate
		m.cache = &corev1.HostPathVolumeSource{Path: c.HostPath, Type: &t}
		m.loaderEnv = append(m.loaderEnv, corev1.EnvVar{Name: api.EnvLoaderCacheDir, Value: api.ModelCacheMountPath})
		if c.MaxSize != nil {
			m.loaderEnv = append(m.loaderEnv, corev1.EnvVar{Name: api.EnvLoaderCacheMaxSize, Value: c.MaxSize.String()})
		}
	}
	for i := range cfg.Profiles {
		m.profiles[cfg.Profiles[i].Name] = &cfg.Profiles[i]
	}
	for i := range cfg.Templates {
		m.templates[cfg.Templates[i].Name] = &cfg.Templates[i]
	}
	m.profileNames = strings.Join(sets.List(sets.KeySet(m.profiles)), ", ")
	m.templateNames = strings.Join(sets.List(sets.KeySet(m.templates)), ", ")
	if m.templateNames == "" {
		m.templateNames = "(none configured)"
	}
	return m, nil
}

// Config is the configuration the Mutator applies; callers must not modify it.
func (m *Mutator) Config() *InjectionConfig { return m.cfg }

// Excluded reports whether pods in the namespace are never mutated.
func (m *Mutator) Excluded(namespace string) bool { return m.excluded.Has(namespace) }

// Mutate computes the patch for a pod being created in ns. An error means the
// pod must be denied; its message names the annotation, the value and what
// is accepted. A pod the API server has not defaulted (a template, for
// `webhook inject`) is first defaulted as the API server would (see
// apiServerDefaults): the patch then starts with that defaulting, so that
// offline and served mutations give the same pod.
func (m *Mutator) Mutate(pod *corev1.Pod, ns Namespace) (Result, error) {
	return m.mutate(pod, ns, nil)
}

// mutate is Mutate; reserved are volume names the pod does not have yet but
// will (see Inject), which the volumes mlplane adds must not take.
func (m *Mutator) mutate(pod *corev1.Pod, ns Namespace, reserved []string) (Result, error) {
	var res Result
	if res.Skipped = m.skip(pod, ns, &res.Warnings); res.Skipped != "" {
		if res.Skipped == SkipAlreadyMutated {
			if st, ops := reinvoked(pod); len(ops) > 0 {
				res.Skipped, res.Patch, res.Injected = "", ops, st
			}
		}
		return res, nil
	}
	pod, defaults := apiServerDefaults(pod)
	p, err := m.plan(pod, ns, &res.Warnings)
	if err != nil {
		return Result{Warnings: res.Warnings}, err
	}
	b := builder{pod: pod, plan: p, reservedVolumes: reserved, ops: append(make([]Op, 0, 24+len(defaults)), defaults...), warnings: res.Warnings, arena: make([]byte, 0, 512)}
	b.newContainers, b.newVolumes = b.nameBuf[:0:4], b.nameBuf[4:4:8]
	if err := b.build(m, ns); err != nil {
		return Result{Warnings: b.warnings}, err
	}
	res.Patch, res.Warnings, res.Injected = b.ops, b.warnings, &b.status
	return res, nil
}

func (m *Mutator) skip(pod *corev1.Pod, ns Namespace, warnings *[]string) string {
	if m.Excluded(ns.Name) {
		return SkipExcludedNamespace
	}
	v, has := pod.Labels[api.LabelInject]
	switch {
	case has && v == api.PodInjectFalse:
		return SkipOptedOut
	case has && v == api.PodInjectTrue:
	default:
		if has {
			*warnings = append(*warnings, fmt.Sprintf("label %s=%q is ignored: want %q or %q", api.LabelInject, v, api.PodInjectTrue, api.PodInjectFalse))
		}
		nv, nsHas := ns.Labels[api.LabelInject]
		if nv != api.NamespaceInjectEnabled {
			if nsHas {
				*warnings = append(*warnings, fmt.Sprintf("namespace %s has label %s=%q, which does not enable injection: want %q", ns.Name, api.LabelInject, nv, api.NamespaceInjectEnabled))
			}
			return SkipNotOptedIn
		}
	}
	if _, done := pod.Annotations[api.AnnotationStatus]; done {
		return SkipAlreadyMutated
	}
	if len(pod.Spec.Containers) == 0 {
		return SkipNoContainers
	}
	return ""
}

// plan is what a pod's annotations ask for, validated.
type plan struct {
	serving      int
	profile      *Profile
	model        *modelSource
	delivery     delivery
	secret       string
	patterns     [2]corev1.EnvVar // the loader's allow and ignore patterns; unset ones have no Name
	modelName    string
	modelVersion string
	gpu          api.GPURequest
	hasGPU       bool
	templates    []*Template
}

// plan reads and validates every annotation; all problems are reported at once.
func (m *Mutator) plan(pod *corev1.Pod, ns Namespace, warnings *[]string) (*plan, error) {
	ann := pod.Annotations
	p := &plan{}
	var errs []error

	containerIndex := func(name string) int {
		return slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == name })
	}
	if name, ok := ann[api.AnnotationContainer]; ok {
		if p.serving = containerIndex(name); p.serving < 0 {
			errs = append(errs, fmt.Errorf("annotation %s: invalid value %q: no such container; want one of %s", api.AnnotationContainer, name, containerNames(pod)))
			p.serving = 0
		}
	} else if name, ok := ann[api.AnnotationDefaultContainer]; ok {
		// Another injector may have put its proxy first and named the
		// application here (issue 14 kind 8).
		if p.serving = containerIndex(name); p.serving < 0 {
			p.serving = 0
			*warnings = append(*warnings, fmt.Sprintf("annotation %s names no container %q; the model is served from the first container, %q: set %s to choose another (one of %s)",
				api.AnnotationDefaultContainer, name, pod.Spec.Containers[0].Name, api.AnnotationContainer, containerNames(pod)))
		}
	}

	profile, ok := ann[api.AnnotationProfile]
	if !ok {
		profile = m.cfg.DefaultProfile
	}
	if p.profile = m.profiles[profile]; p.profile == nil {
		errs = append(errs, fmt.Errorf("annotation %s: invalid value %q: no such profile; want one of %s", api.AnnotationProfile, profile, m.profileNames))
	}

	uri, hasURI := ann[api.AnnotationModelURI]
	if hasURI {
		src, err := parseModelURI(uri, warnings)
		if err != nil {
			errs = append(errs, err)
		} else {
			p.model = &src
			switch {
			case src.claim != "":
				p.delivery = deliverClaim
			case src.image != "" && m.cfg.Loader.OCIMode == OCIModeImageVolume:
				p.delivery = deliverImage
			}
		}
	}
	// noLoader says why the loader's annotations are ignored, or is "".
	noLoader := func(key string) string {
		switch {
		case !hasURI:
			return fmt.Sprintf("annotation %s is ignored: the pod has no %s", key, api.AnnotationModelURI)
		case p.model == nil || p.delivery == deliverLoader:
			return ""
		case key == api.AnnotationModelSecret && p.delivery == deliverClaim:
			return fmt.Sprintf("annotation %s is ignored: a pvc:// model needs no loader credentials", key)
		case key == api.AnnotationModelSecret:
			return fmt.Sprintf("annotation %s is ignored: an oci:// model is mounted as an image volume, which the kubelet pulls with the pod's imagePullSecrets", key)
		case p.delivery == deliverClaim:
			return fmt.Sprintf("annotation %s is ignored: a pvc:// model is mounted whole, without a loader", key)
		default:
			return fmt.Sprintf("annotation %s is ignored: an oci:// model is mounted whole as an image volume, without a loader", key)
		}
	}

	if secret, ok := ann[api.AnnotationModelSecret]; ok {
		name, err := parseSecret(secret, ns.Name)
		switch why := noLoader(api.AnnotationModelSecret); {
		case err != nil:
			errs = append(errs, err)
		case why != "":
			*warnings = append(*warnings, why)
		default:
			p.secret = name
			*warnings = append(*warnings, fmt.Sprintf("annotation %s: the webhook does not check that Secret %q exists in namespace %s; if it does not, the %s init container stays in CreateContainerConfigError", api.AnnotationModelSecret, name, ns.Name, LoaderContainerName))
		}
	}

	for i, pa := range patternAnnotations {
		v, ok := ann[pa.key]
		if !ok {
			continue
		}
		patterns, err := parsePatterns(pa.key, v)
		switch why := noLoader(pa.key); {
		case err != nil:
			errs = append(errs, err)
		case why != "":
			*warnings = append(*warnings, why)
		default:
			p.patterns[i] = corev1.EnvVar{Name: pa.env, Value: patterns}
		}
	}

	if v, ok := ann[api.AnnotationModelName]; ok {
		if err := checkLabelValue(api.AnnotationModelName, v); err != nil {
			errs = append(errs, err)
		}
		p.modelName = v
	} else if p.model != nil {
		p.modelName = p.model.defaultName()
	}
	if v, ok := ann[api.AnnotationModelVersion]; ok {
		if err := checkLabelValue(api.AnnotationModelVersion, v); err != nil {
			errs = append(errs, err)
		}
		p.modelVersion = v
	}

	gpu, hasGPU, err := api.GPURequestFromAnnotations(ann)
	if err != nil {
		errs = append(errs, err)
	} else if hasGPU {
		p.gpu, p.hasGPU = gpu, true
		if q, err := resource.ParseQuantity(strings.TrimSpace(ann[api.AnnotationGPUMemory])); err == nil && q.Value()%(1<<20) != 0 {
			*warnings = append(*warnings, fmt.Sprintf("annotation %s: %q is not a whole number of MiB; rounded up to %dMi", api.AnnotationGPUMemory, ann[api.AnnotationGPUMemory], gpu.MemoryMiB))
		}
	}

	if models, err := api.GPUModelsFromAnnotations(ann); err != nil {
		errs = append(errs, err)
	} else if !models.Any() && !p.hasGPU && !hasUnannotatedGPU(pod) {
		for _, key := range []string{api.AnnotationGPUModel, api.AnnotationGPUModelAvoid} {
			if _, ok := ann[key]; ok {
				*warnings = append(*warnings, fmt.Sprintf("annotation %s is ignored: the pod has no %s", key, api.AnnotationGPUMemory))
			}
		}
	}

	if v, ok := ann[api.AnnotationTemplates]; ok {
		seen := make(map[string]bool)
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			switch t := m.templates[name]; {
			case name == "":
			case t == nil:
				errs = append(errs, fmt.Errorf("annotation %s: invalid value %q: no template %q; want a comma-separated list of %s", api.AnnotationTemplates, v, name, m.templateNames))
			case seen[name]:
				*warnings = append(*warnings, fmt.Sprintf("annotation %s: template %q is listed twice; added once", api.AnnotationTemplates, name))
			default:
				seen[name] = true
				p.templates = append(p.templates, t)
			}
		}
	}
	errs = append(errs, windowsErrors(pod, p)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// containerNames lists the pod's containers, for messages.
func containerNames(pod *corev1.Pod) string {
	names := make([]string, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// hasUnannotatedGPU reports whether a container of pod requests
// api.ResourceGPUMemory itself, which the extender places without the GPU
// annotations.
func hasUnannotatedGPU(pod *corev1.Pod) bool {
	for _, cs := range [2][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if _, ok := gpuMemoryResource(&cs[i]); ok {
				return true
			}
		}
	}
	return false
}

// delivery is how the model reaches api.ModelMountPath.
type delivery int

const (
	// deliverLoader: the loader init container downloads it into an emptyDir.
	deliverLoader delivery = iota
	// deliverClaim: the pvc:// claim is mounted.
	deliverClaim
	// deliverImage: the kubelet mounts the oci:// image as an image volume.
	deliverImage
)

// patternAnnotations are the file pattern annotations, each with the
// loader env var it becomes, in the order of plan.patterns.
var patternAnnotations = [2]struct{ key, env string }{
	{api.AnnotationModelAllowPatterns, api.EnvLoaderAllowPatterns},
	{api.AnnotationModelIgnorePatterns, api.EnvLoaderIgnorePatterns},
}

// maxPatterns bounds the patterns of one annotation.
const maxPatterns = 64

// parsePatterns checks a comma-separated list of file name patterns (white
// space around the commas is dropped) and returns it without that space.
func parsePatterns(key, v string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("annotation %s: invalid value %q: %s; want a comma-separated list of at most %d file name patterns such as \"*.safetensors,config.json\"", key, v, why, maxPatterns)
	}
	items := strings.Split(v, ",")
	if len(items) > maxPatterns {
		return "", bad(fmt.Sprintf("%d patterns", len(items)))
	}
	for i, item := range items {
		item = strings.TrimSpace(item)
		switch {
		case item == "" && len(items) == 1:
			return "", bad("no pattern")
		case item == "":
			return "", bad(fmt.Sprintf("pattern %d is empty", i+1))
		case strings.IndexFunc(item, unicode.IsSpace) >= 0:
			return "", bad(fmt.Sprintf("pattern %d (%q) contains white space", i+1, item))
		}
		items[i] = item
	}
	return strings.Join(items, ","), nil
}

// checkLabelValue rejects an annotation value v of key that cannot be the
// label value the webhook copies it to.
func checkLabelValue(key, v string) error {
	if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 || v == "" {
		return fmt.Errorf("annotation %s: invalid value %q: want a non-empty label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)", key, v)
	}
	return nil
}

func sanitizeLabelValue(s string) string {
	if len(validation.IsValidLabelValue(s)) == 0 {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '-'
		}
	}
	if len(b) > validation.LabelValueMaxLength {
		b = b[:validation.LabelValueMaxLength]
	}
	isAlnum := func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') }
	return strings.TrimFunc(string(b), isAlnum)
}

func parseSecret(v, namespace string) (string, error) {
	name := v
	if ns, n, ok := strings.Cut(v, "/"); ok {
		if ns != namespace {
			return "", fmt.Errorf("annotation %s: invalid value %q: the Secret must be in the pod's own namespace %s; want a Secret name such as %q", api.AnnotationModelSecret, v, namespace, n)
		}
		name = n
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return "", fmt.Errorf("annotation %s: invalid value %q: want the name of a Secret in namespace %s (%s)", api.AnnotationModelSecret, v, namespace, msgs[0])
	}
	return name, nil
}

// jsonPointerEscape escapes a map key for a JSON pointer (RFC 6901).
var jsonPointerEscape = strings.NewReplacer("~", "~0", "/", "~1")

// Paths of the keys the mutator writes, escaped once.
var (
	pathStatus       = "/metadata/annotations/" + jsonPointerEscape.Replace(api.AnnotationStatus)
	visibleDevicesFn = corev1.EnvVar{
		Name: api.EnvNvidiaVisibleDevices,
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{
			APIVersion: "v1",
			FieldPath:  "metadata.annotations['" + api.AnnotationGPUIDs + "']",
		}},
	}
	visibleDevicesVoid = corev1.EnvVar{Name: api.EnvNvidiaVisibleDevices, Value: VisibleDevicesNone}
)

func statusString(s *Status) string {
	b, err := json.Marshal(s)
	if err != nil { // plain strings and numbers always marshal
		panic(err)
	}
	return string(b)
}
