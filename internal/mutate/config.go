package mutate

import (
	"fmt"
	"path"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/mlplane/mlplane/internal/api"
)

// The InjectionConfig's type identity.
const (
	// ConfigAPIVersion is the only apiVersion an InjectionConfig file may have.
	ConfigAPIVersion = "mlplane.io/v1alpha1"
	// ConfigKind is the kind of an InjectionConfig file.
	ConfigKind = "InjectionConfig"
)

// Built-in defaults, documented in docs/webhook.md.
const (
	// DefaultLoaderImage is the model-loader image used when the config names
	// none. The image's contract: download MODEL_URI into MODEL_DIR, exit 0.
	DefaultLoaderImage = "ghcr.io/mlplane/model-loader:v0.1.0"
	// LoaderUser is the user ID the loader runs as by default: the model-
	// loader image's user (hack/images/imagebuild.User, distroless's
	// nonroot), stated so that Pod Security's runAsNonRoot can be checked.
	LoaderUser = 65532
	// DefaultProfileName is the profile used when a pod names none and the
	// config sets no defaultProfile.
	DefaultProfileName = "default"
)

// defaultLoaderArgs passes the model location to the loader through the
// Kubernetes $(VAR) expansion of the env the webhook sets on the loader.
var defaultLoaderArgs = []string{"--uri=$(" + api.EnvModelURI + ")", "--dest=$(" + api.EnvModelDir + ")"}

// InjectionConfig is the admin configuration of the webhook, one YAML file
// mounted from a ConfigMap.
type InjectionConfig struct {
	// APIVersion must be ConfigAPIVersion.
	APIVersion string `json:"apiVersion"`
	// Kind must be ConfigKind.
	Kind string `json:"kind"`
	// Loader is the model-loader init container added for every model URI
	// but pvc:// (and oci:// in OCIModeImageVolume).
	Loader Loader `json:"loader"`
	// SchedulerName is written to spec.schedulerName of GPU pods, so no GPU
	// pod bypasses the extender. Default api.DefaultSchedulerName; an
	// explicit "" leaves spec.schedulerName alone.
	SchedulerName *string `json:"schedulerName,omitempty"`
	// ExcludedNamespaces are never mutated, in addition to
	// api.SystemNamespaces, the webhook's own namespace and
	// api.NodeAgentNamespace.
	ExcludedNamespaces []string `json:"excludedNamespaces,omitempty"`
	// DefaultProfile is the profile for pods without api.AnnotationProfile.
	// Default DefaultProfileName; it must name one of Profiles.
	DefaultProfile string `json:"defaultProfile,omitempty"`
	// Profiles are resource defaults. Default: the built-in profiles of
	// DefaultConfig, used only when the list is empty.
	Profiles []Profile `json:"profiles,omitempty"`
	// Templates are sidecars a pod asks for with api.AnnotationTemplates.
	Templates []Template `json:"templates,omitempty"`
}

// Loader configures the model-loader init container.
type Loader struct {
	// Image default DefaultLoaderImage.
	Image string `json:"image,omitempty"`
	// ImagePullPolicy default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// Command overrides the image's entrypoint; default none.
	Command []string `json:"command,omitempty"`
	// Args default ["--uri=$(MODEL_URI)", "--dest=$(MODEL_DIR)"].
	Args []string `json:"args,omitempty"`
	// Resources of the loader; the pod's profile fills what is left unset.
	// Default requests cpu 500m, memory 1Gi; limit memory 2Gi.
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// SecurityContext default: what Pod Security's restricted level asks
	// of a container: runAsNonRoot, runAsUser LoaderUser (the loader
	// image's user), no privilege escalation, all capabilities dropped,
	// RuntimeDefault seccomp. A pod that passes restricted gets the fields
	// of these that a securityContext set here leaves out (see
	// restrictedContext).
	SecurityContext *corev1.SecurityContext `json:"securityContext,omitempty"`
	// VolumeSizeLimit bounds the emptyDir the model is downloaded into, and
	// is passed to the loader (api.EnvLoaderVolumeSize) so that it refuses
	// a model too large before downloading it; default none (the node's
	// ephemeral storage).
	VolumeSizeLimit *resource.Quantity `json:"volumeSizeLimit,omitempty"`
	// OCIMode is how an oci:// model reaches the pod; default
	// OCIModeImageVolume.
	OCIMode OCIMode `json:"ociMode,omitempty"`
	// Cache, when set, gives the loader a cache directory on the node,
	// shared by every pod on it; default none. docs/webhook.md says what
	// that shares between namespaces.
	Cache *LoaderCache `json:"cache,omitempty"`
}

// OCIMode is how an oci:// model reaches the pod.
type OCIMode string

const (
	// OCIModeImageVolume mounts the image read-only as an image volume
	// (the ImageVolume feature, GA in Kubernetes 1.36): the kubelet pulls
	// it with the pod's imagePullSecrets, and no loader runs.
	OCIModeImageVolume OCIMode = "ImageVolume"
	// OCIModeLoader has the loader pull the OCI artifact into the model
	// emptyDir, as for the other schemes: for clusters without image
	// volumes, and for artifacts the container runtime cannot mount.
	OCIModeLoader OCIMode = "Loader"
)

// ociModes are the valid OCIMode values, for messages.
var ociModes = []OCIMode{OCIModeImageVolume, OCIModeLoader}

// LoaderCache is the node-local model cache: a hostPath directory mounted
// read-write in the loader only, at api.ModelCacheMountPath.
type LoaderCache struct {
	// HostPath is the cache directory on the node: an absolute, clean path
	// other than "/"; required. It is created when missing
	// (DirectoryOrCreate).
	HostPath string `json:"hostPath"`
	// MaxSize bounds the cache, passed to the loader as
	// api.EnvLoaderCacheMaxSize; default none (not passed).
	MaxSize *resource.Quantity `json:"maxSize,omitempty"`
}

// Profile is a set of resource defaults. Only cpu, memory and
// ephemeral-storage may appear; a request may not exceed its limit.
type Profile struct {
	Name     string              `json:"name"`
	Requests corev1.ResourceList `json:"requests,omitempty"`
	Limits   corev1.ResourceList `json:"limits,omitempty"`
}

// Template is an admin-defined sidecar.
type Template struct {
	// Name is what pods list in api.AnnotationTemplates.
	Name string `json:"name"`
	// Native makes the sidecar a native sidecar: an init container with
	// restartPolicy Always, so that Jobs still complete. Default false (a
	// regular container).
	Native bool `json:"native,omitempty"`
	// Container is the sidecar; its name is made unique in the pod.
	Container corev1.Container `json:"container"`
	// Volumes are added with the sidecar; their names are made unique in the
	// pod and the sidecar's volumeMounts follow the renaming.
	Volumes []corev1.Volume `json:"volumes,omitempty"`
}

// profileResources are the only resources a profile may default.
var profileResources = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}

// DefaultConfig is the built-in configuration, used when no file is given.
func DefaultConfig() *InjectionConfig {
	c := &InjectionConfig{
		APIVersion: ConfigAPIVersion,
		Kind:       ConfigKind,
		Profiles: []Profile{
			{Name: DefaultProfileName, Requests: resources("100m", "256Mi", "1Gi")},
			{Name: "small", Requests: resources("500m", "1Gi", "1Gi"), Limits: resources("2", "4Gi", "20Gi")},
			{Name: "large", Requests: resources("4", "32Gi", "10Gi"), Limits: resources("16", "128Gi", "200Gi")},
		},
	}
	SetDefaults(c)
	return c
}

func resources(cpu, memory, ephemeral string) corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse(cpu),
		corev1.ResourceMemory:           resource.MustParse(memory),
		corev1.ResourceEphemeralStorage: resource.MustParse(ephemeral),
	}
}

// SetDefaults fills every unset field of c with its documented default.
func SetDefaults(c *InjectionConfig) {
	l := &c.Loader
	if l.Image == "" {
		l.Image = DefaultLoaderImage
	}
	if l.ImagePullPolicy == "" {
		l.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if l.Args == nil && l.Command == nil {
		l.Args = slices.Clone(defaultLoaderArgs)
	}
	if l.Resources.Requests == nil && l.Resources.Limits == nil {
		l.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")},
		}
	}
	if l.OCIMode == "" {
		l.OCIMode = OCIModeImageVolume
	}
	if l.SecurityContext == nil {
		no := false
		l.SecurityContext = &corev1.SecurityContext{
			RunAsNonRoot:             new(true),
			RunAsUser:                new(int64(LoaderUser)),
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
	}
	if c.SchedulerName == nil {
		s := api.DefaultSchedulerName
		c.SchedulerName = &s
	}
	if c.DefaultProfile == "" {
		c.DefaultProfile = DefaultProfileName
	}
	if len(c.Profiles) == 0 {
		c.Profiles = DefaultConfig().Profiles
	}
}

// Validate returns every problem of a defaulted config at once.
func Validate(c *InjectionConfig) field.ErrorList {
	var errs field.ErrorList
	if c.APIVersion != ConfigAPIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{ConfigAPIVersion}))
	}
	if c.Kind != ConfigKind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{ConfigKind}))
	}
	lp := field.NewPath("loader")
	if c.Loader.Image == "" {
		errs = append(errs, field.Required(lp.Child("image"), "the model-loader image"))
	}
	switch c.Loader.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, field.NotSupported(lp.Child("imagePullPolicy"), c.Loader.ImagePullPolicy,
			[]corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}))
	}
	errs = append(errs, validateRequirements(lp.Child("resources"), c.Loader.Resources.Requests, c.Loader.Resources.Limits, false)...)
	if q := c.Loader.VolumeSizeLimit; q != nil && q.Sign() <= 0 {
		errs = append(errs, field.Invalid(lp.Child("volumeSizeLimit"), q.String(), "must be positive"))
	}
	if !slices.Contains(ociModes, c.Loader.OCIMode) {
		errs = append(errs, field.NotSupported(lp.Child("ociMode"), c.Loader.OCIMode, ociModes))
	}
	if cache := c.Loader.Cache; cache != nil {
		cp := lp.Child("cache")
		switch hp := cache.HostPath; {
		case hp == "":
			errs = append(errs, field.Required(cp.Child("hostPath"), "the cache directory on the node"))
		case !path.IsAbs(hp):
			errs = append(errs, field.Invalid(cp.Child("hostPath"), hp, "must be an absolute path"))
		case path.Clean(hp) != hp:
			errs = append(errs, field.Invalid(cp.Child("hostPath"), hp, fmt.Sprintf("must be a clean path (%s)", path.Clean(hp))))
		case hp == "/":
			errs = append(errs, field.Invalid(cp.Child("hostPath"), hp, "must not be the node's root directory"))
		}
		if q := cache.MaxSize; q != nil && q.Sign() <= 0 {
			errs = append(errs, field.Invalid(cp.Child("maxSize"), q.String(), "must be positive"))
		}
	}
	if c.SchedulerName != nil && *c.SchedulerName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(*c.SchedulerName) {
			errs = append(errs, field.Invalid(field.NewPath("schedulerName"), *c.SchedulerName, msg))
		}
	}
	for i, ns := range c.ExcludedNamespaces {
		for _, msg := range validation.IsDNS1123Label(ns) {
			errs = append(errs, field.Invalid(field.NewPath("excludedNamespaces").Index(i), ns, msg))
		}
	}

	pp := field.NewPath("profiles")
	profiles := sets.New[string]()
	for i, p := range c.Profiles {
		ip := pp.Index(i)
		errs = append(errs, validateName(ip.Child("name"), p.Name, profiles)...)
		errs = append(errs, validateRequirements(ip, p.Requests, p.Limits, true)...)
	}
	if !profiles.Has(c.DefaultProfile) {
		errs = append(errs, field.NotSupported(field.NewPath("defaultProfile"), c.DefaultProfile, sets.List(profiles)))
	}

	tp := field.NewPath("templates")
	templates := sets.New[string]()
	for i, t := range c.Templates {
		ip := tp.Index(i)
		errs = append(errs, validateName(ip.Child("name"), t.Name, templates)...)
		cp := ip.Child("container")
		for _, msg := range validation.IsDNS1123Label(t.Container.Name) {
			errs = append(errs, field.Invalid(cp.Child("name"), t.Container.Name, msg))
		}
		if t.Container.Image == "" {
			errs = append(errs, field.Required(cp.Child("image"), ""))
		}
		if t.Container.RestartPolicy != nil {
			errs = append(errs, field.Forbidden(cp.Child("restartPolicy"), "set native: true to make a native sidecar"))
		}
		errs = append(errs, validateRequirements(cp.Child("resources"), t.Container.Resources.Requests, t.Container.Resources.Limits, false)...)
		vols := sets.New[string]()
		for j, v := range t.Volumes {
			errs = append(errs, validateName(ip.Child("volumes").Index(j).Child("name"), v.Name, vols)...)
		}
		for j, m := range t.Container.VolumeMounts {
			if !vols.Has(m.Name) {
				errs = append(errs, field.NotFound(cp.Child("volumeMounts").Index(j).Child("name"), m.Name))
			}
		}
	}
	return errs
}

// validateName checks a DNS label that must be unique among seen, and adds it.
func validateName(p *field.Path, name string, seen sets.Set[string]) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(name) {
		errs = append(errs, field.Invalid(p, name, msg))
	}
	if seen.Has(name) {
		errs = append(errs, field.Duplicate(p, name))
	}
	seen.Insert(name)
	return errs
}

// validateRequirements checks quantities are positive and no request is above
// its limit; onlyProfile restricts the names to profileResources.
func validateRequirements(p *field.Path, requests, limits corev1.ResourceList, onlyProfile bool) field.ErrorList {
	var errs field.ErrorList
	check := func(kind string, l corev1.ResourceList) {
		for _, name := range sets.List(sets.KeySet(l)) {
			q := l[name]
			np := p.Child(kind).Key(string(name))
			if onlyProfile && !slices.Contains(profileResources, name) {
				errs = append(errs, field.NotSupported(np, name, profileResources))
			}
			if q.Sign() <= 0 {
				errs = append(errs, field.Invalid(np, q.String(), "must be positive"))
			}
		}
	}
	check("requests", requests)
	check("limits", limits)
	for _, name := range sets.List(sets.KeySet(requests)) {
		req := requests[name]
		if lim, ok := limits[name]; ok && req.Cmp(lim) > 0 {
			errs = append(errs, field.Invalid(p.Child("requests").Key(string(name)), req.String(),
				fmt.Sprintf("must not be above the limit %s", lim.String())))
		}
	}
	return errs
}

// LoadConfig decodes an InjectionConfig file strictly (unknown fields are
// errors), applies defaults and validates it, returning every problem.
func LoadConfig(data []byte) (*InjectionConfig, error) {
	c := &InjectionConfig{}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", ConfigKind, err)
	}
	SetDefaults(c)
	if errs := Validate(c); len(errs) > 0 {
		return nil, fmt.Errorf("invalid %s: %w", ConfigKind, errs.ToAggregate())
	}
	return c, nil
}
