package mutate

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mlplane/mlplane/internal/api"
)

// builder turns a plan into patch operations. Operations that change existing
// list items come first, with the original indices; insertions come last, so
// every index in the patch is valid when it is applied in order.
type builder struct {
	pod      *corev1.Pod
	plan     *plan
	ops      []Op
	warnings []string
	status   Status

	newContainers []string
	newVolumes    []string
	// reservedVolumes are taken volume names the pod does not have yet.
	reservedVolumes []string
	// tokenVolume is the index of the volume the ServiceAccount admission
	// plugin added, or -1 (see serviceAccountMount). It ran before the
	// webhooks and appended the volume and its mounts; when the pod is
	// created from a template `webhook inject` wrote, it appends them after
	// mlplane's. So that the lists come out in the same order, mlplane
	// inserts its volumes and mounts before the token's.
	tokenVolume int
	nameBuf     [8]string
	// arena holds the bytes of every JSON pointer the builder makes (see path).
	arena []byte
}

// path concatenates a JSON pointer in the builder's arena: one allocation for
// all the patch's paths instead of one per path. Bytes once returned are
// never written again (append only writes past them, or copies to a new
// array), so the strings stay immutable.
func (b *builder) path(a, c string) string {
	start := len(b.arena)
	b.arena = append(append(b.arena, a...), c...)
	return unsafe.String(unsafe.SliceData(b.arena[start:]), len(b.arena)-start)
}

// pathIndex is path(prefix, strconv.Itoa(i)).
func (b *builder) pathIndex(prefix string, i int) string {
	start := len(b.arena)
	b.arena = strconv.AppendInt(append(b.arena, prefix...), int64(i), 10)
	return unsafe.String(unsafe.SliceData(b.arena[start:]), len(b.arena)-start)
}

// entry is one resource quantity to add.
type entry struct {
	name corev1.ResourceName
	q    resource.Quantity
}

// envPolicy says what to do with an env var the container already has.
type envPolicy int

const (
	envReplace   envPolicy = iota // replace a different value, with a warning
	envIfMissing                  // leave the user's value
)

type envAdd struct {
	v      corev1.EnvVar
	policy envPolicy
}

func (b *builder) build(m *Mutator, ns Namespace) error {
	pod, p := b.pod, b.plan
	serving := &pod.Spec.Containers[p.serving]
	b.status.Container, b.status.Profile = serving.Name, p.profile.Name

	// Validate what the existing containers allow before emitting anything.
	if p.model != nil {
		for _, vm := range serving.VolumeMounts {
			if path.Clean(vm.MountPath) == api.ModelMountPath {
				return fmt.Errorf("annotation %s: container %q already mounts volume %q at %s; remove that mount or the annotation", api.AnnotationModelURI, serving.Name, vm.Name, api.ModelMountPath)
			}
		}
	}
	var gpuReq, gpuLim []entry
	var gpuBuf [2]entry
	if p.hasGPU {
		total := *resource.NewQuantity(p.gpu.TotalMiB(), resource.DecimalSI)
		gpuBuf = [2]entry{{api.ResourceGPUMemory, total}, {api.ResourceGPUMemory, total}}
		for i, list := range [2]corev1.ResourceList{serving.Resources.Requests, serving.Resources.Limits} {
			q, ok := list[api.ResourceGPUMemory]
			switch {
			case !ok && i == 0:
				gpuReq = gpuBuf[:1]
			case !ok:
				gpuLim = gpuBuf[1:]
			case q.Value() != p.gpu.TotalMiB():
				return fmt.Errorf("annotation %s: container %q sets resource %s=%d, but %s=%s and %s=%d need %d (MiB); remove the resource from the container or make them agree",
					api.AnnotationGPUMemory, serving.Name, api.ResourceGPUMemory, q.Value(),
					api.AnnotationGPUMemory, pod.Annotations[api.AnnotationGPUMemory], api.AnnotationGPUCount, p.gpu.Count, p.gpu.TotalMiB())
			}
		}
		b.status.GPUMemoryMiB, b.status.GPUCount = p.gpu.MemoryMiB, p.gpu.Count
		b.gpuWarnings(p.serving)
		for i := range pod.Spec.InitContainers {
			c := &pod.Spec.InitContainers[i]
			q, ok := gpuMemoryResource(c)
			switch {
			case !ok || isSidecar(c): // a sidecar is warned about in gpuWarnings
			case q.CmpInt64(p.gpu.TotalMiB()) > 0:
				return fmt.Errorf("annotation %s: init container %q requests resource %s=%s, more than the pod's %d (MiB: %s=%s on %s=%d GPUs); it runs on the pod's GPUs before the serving container, so it may request at most that, or nothing",
					api.AnnotationGPUMemory, c.Name, api.ResourceGPUMemory, q.String(), p.gpu.TotalMiB(),
					api.AnnotationGPUMemory, pod.Annotations[api.AnnotationGPUMemory], api.AnnotationGPUCount, p.gpu.Count)
			default:
				b.status.GPUInitContainers = append(b.status.GPUInitContainers, c.Name)
			}
		}
	}

	// Names and injected objects.
	var modelVol, cacheVol *corev1.Volume
	var modelMount *corev1.VolumeMount
	var loader *corev1.Container
	if p.model != nil {
		modelVol = &corev1.Volume{Name: b.uniqueVolume(ModelVolumeName)}
		modelMount = &corev1.VolumeMount{Name: modelVol.Name, MountPath: api.ModelMountPath, ReadOnly: true}
		b.status.ModelVolume = modelVol.Name
		switch p.delivery {
		case deliverClaim:
			modelVol.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: p.model.claim, ReadOnly: true}
		case deliverImage:
			modelVol.Image = &corev1.ImageVolumeSource{Reference: p.model.image, PullPolicy: corev1.PullIfNotPresent}
		default:
			modelVol.EmptyDir = &corev1.EmptyDirVolumeSource{SizeLimit: m.cfg.Loader.VolumeSizeLimit}
			if m.cache != nil {
				cacheVol = &corev1.Volume{Name: b.uniqueVolume(CacheVolumeName), VolumeSource: corev1.VolumeSource{HostPath: m.cache}}
				b.status.CacheVolume = cacheVol.Name
			}
			loader = b.loader(m, modelVol.Name, cacheVol)
			b.status.Loader = loader.Name
		}
	}
	var nativeSidecars, sidecars []*corev1.Container
	var sidecarVolumes []*corev1.Volume
	var addedBuf [4]injected
	added := addedBuf[:0]
	for _, t := range p.templates {
		c, vols := b.sidecar(t)
		sidecarVolumes = append(sidecarVolumes, vols...)
		if t.Native {
			nativeSidecars = append(nativeSidecars, c)
		} else {
			sidecars = append(sidecars, c)
		}
		b.status.Sidecars = append(b.status.Sidecars, c.Name)
		added = append(added, injected{c, fmt.Sprintf("annotation %s: template %q", api.AnnotationTemplates, t.Name), true})
	}
	if loader != nil {
		added = append(added, injected{loader, fromLoader, false})
	}
	b.tokenVolume = -1
	if sa := serviceAccountMount(&pod.Spec); sa != nil {
		b.tokenVolume = slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == sa.Name })
		for _, a := range added {
			if !mountsPath(a.c, sa.MountPath) {
				a.c.VolumeMounts = append(a.c.VolumeMounts, *sa)
			}
		}
	}
	if e := completionIndexEnv(pod); e != nil {
		for _, a := range added {
			if !hasEnv(a.c.Env, e.Name) {
				a.c.Env = append(a.c.Env, *e)
			}
		}
	}
	if err := b.namespacePolicies(added, ns); err != nil {
		return err
	}
	if err := b.portConflicts(added); err != nil {
		return err
	}
	if err := b.podLevelResources(added); err != nil {
		return err
	}
	// Insertions, in order: native sidecars first (a proxy must be up
	// before the loader downloads), then the loader, then the user's init
	// containers.
	inits := nativeSidecars
	if loader != nil {
		inits = append(inits, loader)
	}
	vols := sidecarVolumes
	if modelVol != nil {
		vols = append(vols, modelVol)
	}
	if cacheVol != nil {
		vols = append(vols, cacheVol)
	}
	if err := b.podSecurity(inits, sidecars, vols, ns); err != nil {
		return err
	}

	// Metadata. The labels map is written whole (the user's labels copied
	// unchanged): one operation instead of one per key. A label the pod
	// already has is never changed.
	var labelBuf [3]kv
	labels := labelBuf[:0]
	if p.modelName != "" {
		from := api.AnnotationModelName
		if _, ok := pod.Annotations[from]; !ok {
			from = api.AnnotationModelURI
		}
		labels = b.setLabel(labels, api.LabelModel, p.modelName, from)
	}
	if p.modelVersion != "" {
		labels = b.setLabel(labels, api.LabelModelVersion, p.modelVersion, api.AnnotationModelVersion)
		if _, ok := pod.Labels[api.LabelAppVersion]; !ok {
			labels = append(labels, kv{api.LabelAppVersion, p.modelVersion})
		}
	}
	if len(labels) > 0 {
		merged := make(map[string]string, len(pod.Labels)+len(labels))
		for k, v := range pod.Labels {
			merged[k] = v
		}
		for _, e := range labels {
			merged[e.k] = e.v
		}
		b.add("/metadata/labels", merged)
	}
	status := statusString(&b.status)
	if len(pod.Annotations) == 0 {
		b.add("/metadata/annotations", map[string]string{api.AnnotationStatus: status})
	} else {
		b.add(pathStatus, status)
	}
	if p.hasGPU && m.scheduler != "" && pod.Spec.SchedulerName != m.scheduler {
		if s := pod.Spec.SchedulerName; s != "" && s != corev1.DefaultSchedulerName {
			b.warn("spec.schedulerName %q is replaced by %q so that the GPU pod is placed by mlplane's extender", s, m.scheduler)
		}
		b.add("/spec/schedulerName", m.scheduler)
	}

	// Existing containers, in place.
	var hide, gpuEnv []envAdd
	if p.hasGPU {
		hide = []envAdd{{visibleDevicesVoid, envIfMissing}}
		gpuEnv = []envAdd{{visibleDevicesFn, envReplace},
			{corev1.EnvVar{Name: api.EnvGPUMemoryMiB, Value: strconv.FormatInt(p.gpu.MemoryMiB, 10)}, envReplace}}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		env := hide
		if contains(b.status.GPUInitContainers, c.Name) {
			env = gpuEnv
		}
		b.containerOps(b.pathIndex("/spec/initContainers/", i), c, env, nil, nil, nil)
	}
	for i := range pod.Spec.Containers {
		base := b.pathIndex("/spec/containers/", i)
		if i != p.serving {
			b.containerOps(base, &pod.Spec.Containers[i], hide, nil, nil, nil)
			continue
		}
		var envBuf [5]envAdd
		env := envBuf[:0]
		if p.model != nil {
			env = append(env, envAdd{corev1.EnvVar{Name: api.EnvModelURI, Value: p.model.uri}, envReplace},
				envAdd{corev1.EnvVar{Name: api.EnvModelDir, Value: p.model.dir()}, envReplace})
			if loader != nil { // only the loader writes a manifest
				env = append(env, envAdd{corev1.EnvVar{Name: api.EnvModelManifest, Value: modelManifestPath}, envReplace})
			}
		}
		env = append(env, gpuEnv...)
		b.containerOps(base, serving, env, modelMount, gpuReq, gpuLim)
	}

	// Insertions.
	addItems(b, "/spec/initContainers", len(pod.Spec.InitContainers) > 0, inits, 0)
	addItems(b, "/spec/containers", true, sidecars, -1)
	// Before the service account token's volume, where the pod has one:
	// where they are when the pod is created from `webhook inject`'s output.
	addItems(b, "/spec/volumes", len(pod.Spec.Volumes) > 0, vols, b.tokenVolume)
	return nil
}

// fromLoader is what adds the loader, for messages.
const fromLoader = "annotation " + api.AnnotationModelURI + ": the model loader"

// addItems adds items to the list at path: the whole list when the pod has
// none (exists is false: absent, null or empty, which one "add" of the whole
// list covers alike), else one operation per item, inserted from index at
// on, or appended when at is negative.
func addItems[T any](b *builder, path string, exists bool, items []T, at int) {
	switch {
	case len(items) == 0:
	case !exists:
		b.add(path, items)
	case at >= 0:
		for i, it := range items {
			b.add(b.pathIndex(path+"/", at+i), it)
		}
	default:
		for _, it := range items {
			b.add(b.path(path, "/-"), it)
		}
	}
}

func (b *builder) add(path string, value any) {
	b.ops = append(b.ops, Op{Op: "add", Path: path, Value: value})
}

func (b *builder) warn(format string, args ...any) {
	b.warnings = append(b.warnings, fmt.Sprintf(format, args...))
}

// gpuWarnings flags GPU requests the extender would not account for. A
// container that runs beside the serving container (another container, a
// native sidecar) adds its request to the serving container's as Kubernetes
// counts the pod, while the extender books only what the annotations say.
func (b *builder) gpuWarnings(serving int) {
	for i, c := range b.pod.Spec.Containers {
		if _, ok := c.Resources.Limits["nvidia.com/gpu"]; ok {
			b.warn("container %q also requests nvidia.com/gpu; mlplane places pods by %s, and whole-GPU requests from the NVIDIA device plugin are not coordinated with it", c.Name, api.ResourceGPUMemory)
		}
		if _, ok := c.Resources.Requests[api.ResourceGPUMemory]; ok && i != serving {
			b.warn("container %q requests %s itself; only the serving container %q should", c.Name, api.ResourceGPUMemory, b.pod.Spec.Containers[serving].Name)
		}
	}
	for i := range b.pod.Spec.InitContainers {
		c := &b.pod.Spec.InitContainers[i]
		if _, ok := gpuMemoryResource(c); ok && isSidecar(c) {
			b.warn("sidecar %q requests %s itself; a sidecar runs beside the serving container and gets no GPU, only the serving container %q and init containers should request it", c.Name, api.ResourceGPUMemory, b.pod.Spec.Containers[serving].Name)
		}
	}
}

// gpuMemoryResource is the container's request of api.ResourceGPUMemory, or
// its limit when it sets no request; ok is false when it sets neither.
func gpuMemoryResource(c *corev1.Container) (q resource.Quantity, ok bool) {
	if q, ok = c.Resources.Requests[api.ResourceGPUMemory]; !ok {
		q, ok = c.Resources.Limits[api.ResourceGPUMemory]
	}
	return q, ok
}

// isSidecar reports whether init container c is a native sidecar
// (restartPolicy Always), which runs for the life of the pod.
func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

type kv struct{ k, v string }

// setLabel adds label key=value, derived from annotation from, unless the
// pod already has the label: a label the user set is never changed (a
// Deployment's selector may use it, and a pod that no longer matches its
// ReplicaSet makes the ReplicaSet create pods without end). A different
// value gets a warning instead.
func (b *builder) setLabel(out []kv, key, value, from string) []kv {
	if old, ok := b.pod.Labels[key]; ok {
		if old != value {
			b.warn("label %s=%q is kept, not set to %q from annotation %s: the webhook never changes a label the pod already has", key, old, value, from)
		}
		return out
	}
	return append(out, kv{key, value})
}

// containerOps patches an existing container at base: env, one volume mount,
// extra resources and the profile's defaults. New env vars go before the
// container's own; one the container already has is replaced in place
// (envReplace, with a warning) or left alone (envIfMissing).
func (b *builder) containerOps(base string, c *corev1.Container, env []envAdd, mount *corev1.VolumeMount, extraReq, extraLim []entry) {
	var add []corev1.EnvVar
	for _, e := range env {
		j := -1
		for k := range c.Env {
			if c.Env[k].Name == e.v.Name {
				j = k
			}
		}
		switch {
		case j < 0:
			if add == nil {
				add = make([]corev1.EnvVar, 0, len(env))
			}
			add = append(add, e.v)
		case e.policy == envIfMissing || equalEnv(&c.Env[j], &e.v):
		default:
			b.warn("container %q: env %s is replaced by mlplane's value", c.Name, e.v.Name)
			b.ops = append(b.ops, Op{Op: "replace", Path: b.pathIndex(b.path(base, "/env/"), j), Value: e.v})
		}
	}
	// Before the user's entries, in order: the kubelet expands $(VAR) only
	// from entries declared earlier, so a user variable such as
	// VLLM_MODEL=$(MODEL_DIR) sees mlplane's variables.
	addItems(b, b.path(base, "/env"), len(c.Env) > 0, add, 0)
	if mount != nil {
		// Before the service account token's mount, if the container has it
		// (see tokenVolume).
		at := -1
		if b.tokenVolume >= 0 {
			name := b.pod.Spec.Volumes[b.tokenVolume].Name
			at = slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == name && m.MountPath == serviceAccountTokenPath
			})
		}
		addItems(b, b.path(base, "/volumeMounts"), len(c.VolumeMounts) > 0, []*corev1.VolumeMount{mount}, at)
	}
	var reqBuf, limBuf [4]entry
	reqs, lims := profileDefaults(&c.Resources, b.plan.profile, b.pod.Spec.Resources, append(reqBuf[:0], extraReq...), append(limBuf[:0], extraLim...))
	if len(reqs) == 0 && len(lims) == 0 {
		return
	}
	// One add of the whole resources object: the user's entries are copied
	// unchanged, so this equals one add per new key, in fewer operations.
	r := &c.Resources
	b.add(b.path(base, "/resources"), &corev1.ResourceRequirements{
		Requests: toList(r.Requests, reqs), Limits: toList(r.Limits, lims), Claims: r.Claims})
}

func equalEnv(a, b *corev1.EnvVar) bool {
	if a.Value != b.Value || (a.ValueFrom == nil) != (b.ValueFrom == nil) {
		return false
	}
	if a.ValueFrom == nil {
		return true
	}
	fa, fb := a.ValueFrom.FieldRef, b.ValueFrom.FieldRef
	return fa != nil && fb != nil && fa.FieldPath == fb.FieldPath && a.ValueFrom.ResourceFieldRef == nil &&
		a.ValueFrom.ConfigMapKeyRef == nil && a.ValueFrom.SecretKeyRef == nil
}

// profileDefaults returns the requests and limits to add to r: extra first,
// then, for cpu, memory and ephemeral-storage, the profile's value where the
// user set none. A user's value is never changed; a defaulted request is
// capped by the user's limit and a defaulted limit is raised to the user's
// request, so a request never ends above its limit. A resource the pod
// budgets at pod level (podLevel, its spec.resources) is not defaulted:
// the containers share the pod's budget, and requests the profile added
// could add up to more than it (issue 14 kind 8).
func profileDefaults(r *corev1.ResourceRequirements, p *Profile, podLevel *corev1.ResourceRequirements, extraReq, extraLim []entry) (reqs, lims []entry) {
	reqs, lims = extraReq, extraLim
	for _, name := range profileResources {
		if podLevel != nil {
			if _, ok := podLevel.Requests[name]; ok {
				continue
			}
			if _, ok := podLevel.Limits[name]; ok {
				continue
			}
		}
		ureq, hasReq := r.Requests[name]
		ulim, hasLim := r.Limits[name]
		if !hasReq {
			if q, ok := p.Requests[name]; ok {
				if hasLim && ulim.Cmp(q) < 0 {
					q = ulim
				}
				reqs = append(reqs, entry{name, q})
				ureq, hasReq = q, true
			}
		}
		if !hasLim {
			if q, ok := p.Limits[name]; ok {
				if hasReq && ureq.Cmp(q) > 0 {
					q = ureq
				}
				lims = append(lims, entry{name, q})
			}
		}
	}
	return reqs, lims
}

// toList returns l with entries added, as a copy when there are any.
func toList(l corev1.ResourceList, add []entry) corev1.ResourceList {
	if len(add) == 0 {
		return l
	}
	out := make(corev1.ResourceList, len(l)+len(add))
	for k, v := range l {
		out[k] = v
	}
	for _, e := range add {
		out[e.name] = e.q
	}
	return out
}

// withDefaults is an injected container's resources with the profile applied.
func (b *builder) withDefaults(r corev1.ResourceRequirements) corev1.ResourceRequirements {
	var reqBuf, limBuf [4]entry
	reqs, lims := profileDefaults(&r, b.plan.profile, b.pod.Spec.Resources, reqBuf[:0], limBuf[:0])
	if len(reqs) > 0 {
		r.Requests = toList(r.Requests, reqs)
	}
	if len(lims) > 0 {
		r.Limits = toList(r.Limits, lims)
	}
	return r
}

// modelManifestPath is api.EnvModelManifest in the serving container of a
// pod with a loader.
const modelManifestPath = api.ModelMountPath + "/" + api.ModelManifestFile

// loader is the model-loader init container: the model volume mounted
// read-write, the node cache (cache, when not nil) too, and in its env the
// model, the pod's file patterns and what the config says of the volume and
// the cache.
func (b *builder) loader(m *Mutator, volume string, cache *corev1.Volume) *corev1.Container {
	l := &m.cfg.Loader
	p := b.plan
	env := make([]corev1.EnvVar, 0, 5+len(m.loaderEnv))
	env = append(env, corev1.EnvVar{Name: api.EnvModelURI, Value: p.model.uri},
		corev1.EnvVar{Name: api.EnvModelDir, Value: api.ModelMountPath})
	for _, e := range p.patterns {
		if e.Name != "" {
			env = append(env, e)
		}
	}
	env = append(env, m.loaderEnv...)
	if p.hasGPU {
		env = append(env, visibleDevicesVoid)
	}
	mounts := make([]corev1.VolumeMount, 1, 2)
	mounts[0] = corev1.VolumeMount{Name: volume, MountPath: api.ModelMountPath}
	if cache != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: cache.Name, MountPath: api.ModelCacheMountPath})
	}
	c := &corev1.Container{
		Name:            b.uniqueContainer(LoaderContainerName),
		Image:           l.Image,
		ImagePullPolicy: l.ImagePullPolicy,
		Command:         l.Command,
		Args:            l.Args,
		Env:             env,
		VolumeMounts:    mounts,
		Resources:       b.withDefaults(l.Resources),
		SecurityContext: l.SecurityContext,
	}
	if p.secret != "" {
		// Not optional: a missing Secret keeps the pod from starting, with
		// the kubelet's CreateContainerConfigError event naming it.
		optional := false
		c.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: p.secret},
			Optional:             &optional,
		}}}
	}
	return c
}

// sidecar instantiates a template with names unique in the pod.
func (b *builder) sidecar(t *Template) (*corev1.Container, []*corev1.Volume) {
	c := t.Container.DeepCopy()
	c.Name = b.uniqueContainer(c.Name)
	vols := make([]*corev1.Volume, len(t.Volumes))
	for i := range t.Volumes {
		v := t.Volumes[i].DeepCopy()
		if v.Name = b.uniqueVolume(v.Name); v.Name != t.Volumes[i].Name {
			for j := range c.VolumeMounts {
				if c.VolumeMounts[j].Name == t.Volumes[i].Name {
					c.VolumeMounts[j].Name = v.Name
				}
			}
		}
		vols[i] = v
	}
	if t.Native {
		always := corev1.ContainerRestartPolicyAlways
		c.RestartPolicy = &always
	}
	if b.plan.hasGPU && !hasEnv(c.Env, api.EnvNvidiaVisibleDevices) {
		c.Env = append(c.Env, visibleDevicesVoid)
	}
	c.Resources = b.withDefaults(c.Resources)
	return c, vols
}

func hasEnv(env []corev1.EnvVar, name string) bool {
	for i := range env {
		if env[i].Name == name {
			return true
		}
	}
	return false
}

// uniqueContainer returns base, or base-2, base-3, ... whichever no container
// (init, regular, ephemeral or injected) of the pod has.
func (b *builder) uniqueContainer(base string) string {
	s := &b.pod.Spec
	taken := func(n string) bool {
		for i := range s.InitContainers {
			if s.InitContainers[i].Name == n {
				return true
			}
		}
		for i := range s.Containers {
			if s.Containers[i].Name == n {
				return true
			}
		}
		for i := range s.EphemeralContainers {
			if s.EphemeralContainers[i].Name == n {
				return true
			}
		}
		return contains(b.newContainers, n)
	}
	n := unique(base, taken)
	b.newContainers = append(b.newContainers, n)
	return n
}

// uniqueVolume is uniqueContainer for volumes.
func (b *builder) uniqueVolume(base string) string {
	taken := func(n string) bool {
		for i := range b.pod.Spec.Volumes {
			if b.pod.Spec.Volumes[i].Name == n {
				return true
			}
		}
		return contains(b.newVolumes, n) || contains(b.reservedVolumes, n)
	}
	n := unique(base, taken)
	b.newVolumes = append(b.newVolumes, n)
	return n
}

func unique(base string, taken func(string) bool) string {
	n := base
	for i := 2; taken(n); i++ {
		n = base + "-" + strconv.Itoa(i)
	}
	return n
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
