package mutate

import (
	"fmt"
	"slices"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"
)

// Pod fields that change what is valid once mlplane adds containers,
// ports, volumes or resources (issue 14 kind 8): checked on the pod as the
// API server will see it after the patch, and denied with mlplane's reason
// where the API server would reject it with its own, or where the pod could
// not run. Pod Security, the other such check, is in podsecurity.go.

// injected is a container mlplane adds, with what asked for it (for
// messages).
type injected struct {
	c    *corev1.Container
	from string
	// concurrent: it runs beside the pod's containers (a regular
	// container or a native sidecar), not before them.
	concurrent bool
}

// portConflicts denies ports of the containers mlplane adds that another
// container of the pod declares too. The containers of a pod share one
// network namespace (with spec.hostNetwork, the node's), so two that run
// at the same time cannot both listen on a port: the API server rejects a
// hostPort given twice among the regular containers (validation's
// AccumulateUniqueHostPorts; under hostNetwork every containerPort is also
// a hostPort, SetDefaults_Pod's defaultHostNetworkPorts) and only warns of
// the rest, after which one of the two containers fails to bind.
func (b *builder) portConflicts(added []injected) error {
	if !slices.ContainsFunc(added, func(a injected) bool { return a.concurrent && len(a.c.Ports) > 0 }) {
		return nil // nothing added declares a port
	}
	type owner struct{ name, from string }
	spec := &b.pod.Spec
	taken := map[string]owner{}
	key := func(p corev1.ContainerPort) (container, host string) {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		hostPort := p.HostPort
		if spec.HostNetwork && hostPort == 0 {
			hostPort = p.ContainerPort
		}
		container = fmt.Sprintf("%d/%s", p.ContainerPort, proto)
		if hostPort != 0 {
			host = fmt.Sprintf("host %s:%d/%s", p.HostIP, hostPort, proto)
		}
		return container, host
	}
	describe := func(p corev1.ContainerPort) string {
		c, h := key(p)
		if h != "" && spec.HostNetwork {
			return c + " on the node's network (spec.hostNetwork)"
		}
		if h != "" {
			return c + " (hostPort " + strings.TrimPrefix(h, "host ") + ")"
		}
		return c
	}
	// claim records c's ports; from is what added c, "" for the pod's own
	// containers, whose conflicts among themselves are the API server's to
	// judge.
	claim := func(c *corev1.Container, from string) error {
		for _, p := range c.Ports {
			ck, hk := key(p)
			for _, k := range [2]string{ck, hk} {
				o, ok := taken[k]
				switch {
				case k == "":
				case !ok:
					taken[k] = owner{c.Name, from}
				case from != "" && o.name != c.Name:
					return fmt.Errorf("%s: container %q declares port %s, which container %q of the pod declares too: the containers of a pod share one network namespace, so only one of them can listen on it; change one of the ports",
						from, c.Name, describe(p), o.name)
				}
			}
		}
		return nil
	}
	// What runs beside the added containers: the regular containers and
	// the native sidecars.
	for i := range spec.InitContainers {
		if isSidecar(&spec.InitContainers[i]) {
			if err := claim(&spec.InitContainers[i], ""); err != nil {
				return err
			}
		}
	}
	for i := range spec.Containers {
		if err := claim(&spec.Containers[i], ""); err != nil {
			return err
		}
	}
	for _, a := range added {
		if a.concurrent {
			if err := claim(a.c, a.from); err != nil {
				return err
			}
		}
	}
	return nil
}

// podLevelResources checks the pod-level budget (spec.resources, KEP 2837)
// once the containers mlplane adds are in: the aggregate of the
// containers' requests (k8s.io/component-helpers' AggregateContainerRequests,
// the API server's own count) may not exceed a pod-level request, nor a
// regular container's limit the pod-level limit (validation's
// validatePodResourceConsistency). The profile never defaults a resource
// the pod budgets at pod level (profileDefaults), so only what the
// InjectionConfig gives the added containers (loader.resources, a
// template's resources) can break it. A pod that breaks it already is the
// API server's to reject.
func (b *builder) podLevelResources(added []injected) error {
	pl := b.pod.Spec.Resources
	if pl == nil || len(pl.Requests)+len(pl.Limits) == 0 {
		return nil
	}
	before := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: b.pod.Spec.InitContainers, Containers: b.pod.Spec.Containers}}
	after := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: slices.Clone(b.pod.Spec.InitContainers), Containers: slices.Clone(b.pod.Spec.Containers)}}
	var names []string
	var inits []corev1.Container
	for _, a := range added {
		c := *a.c
		// The API server defaults the added containers' requests from their
		// limits before it validates.
		c.Resources = *c.Resources.DeepCopy()
		defaultResources(&c.Resources)
		names = append(names, a.c.Name)
		switch {
		case c.RestartPolicy != nil && a.concurrent: // a native sidecar
			inits = append(inits, c)
		case a.concurrent:
			after.Spec.Containers = append(after.Spec.Containers, c)
		default:
			inits = append(inits, c)
		}
		for name, lim := range c.Resources.Limits {
			if pq, ok := pl.Limits[name]; ok && c.RestartPolicy == nil && a.concurrent && lim.Cmp(pq) > 0 {
				return fmt.Errorf("%s: container %q has limits[%s] %s, above the pod's spec.resources.limits[%s] %s; raise the pod's limit or lower the container's in the InjectionConfig",
					a.from, c.Name, name, lim.String(), name, pq.String())
			}
		}
	}
	after.Spec.InitContainers = append(inits, after.Spec.InitContainers...)
	was := resourcehelper.AggregateContainerRequests(before, resourcehelper.PodResourcesOptions{})
	is := resourcehelper.AggregateContainerRequests(after, resourcehelper.PodResourcesOptions{})
	for _, name := range sortedNames(pl.Requests) {
		pq := pl.Requests[name]
		q, w := is[name], was[name]
		if q.Cmp(pq) > 0 && w.Cmp(pq) <= 0 {
			return fmt.Errorf("the pod's spec.resources.requests[%s] is %s, less than the %s its containers request once mlplane adds %s (counted as the API server does: the regular containers and native sidecars together, or the largest init container); raise the pod's request or lower what the InjectionConfig (loader.resources, templates) asks for",
				name, pq.String(), q.String(), strings.Join(names, ", "))
		}
	}
	return nil
}

func sortedNames(l corev1.ResourceList) []corev1.ResourceName {
	names := make([]corev1.ResourceName, 0, len(l))
	for name := range l {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Where the ServiceAccount admission plugin mounts a pod's API token
// (k8s.io/kubernetes plugin/pkg/admission/serviceaccount: ServiceAccountVolumeName,
// DefaultAPITokenMountPath).
const (
	serviceAccountVolumePrefix = "kube-api-access-"
	serviceAccountTokenPath    = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// serviceAccountMount is the token mount the ServiceAccount admission
// plugin gave the pod's containers, or nil when it gave none. That plugin
// runs before the webhooks and mounts the token into every container of the
// pod that mounts nothing at its path; containers mlplane adds to a served
// pod come too late for it, while those `webhook inject` writes into a
// template are there when the pod is created, and get it. So that offline
// and served give the same pod, a served pod's added containers get the
// mount the plugin gave the others, as the plugin would have: its volume
// (the first named kube-api-access-*, as the plugin picks it), read-only,
// when some container already mounts it at the token path (the plugin ran,
// with automount on).
func serviceAccountMount(spec *corev1.PodSpec) *corev1.VolumeMount {
	i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return strings.HasPrefix(v.Name, serviceAccountVolumePrefix) })
	if i < 0 {
		return nil
	}
	name := spec.Volumes[i].Name
	for _, cs := range [2][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, m := range c.VolumeMounts {
				if m.Name == name && m.MountPath == serviceAccountTokenPath {
					return &corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: serviceAccountTokenPath}
				}
			}
		}
	}
	return nil
}

// mountsPath reports whether c mounts something at p.
func mountsPath(c *corev1.Container, p string) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == p })
}

// completionIndexEnvName is the variable the Job controller gives every
// container of an Indexed Job's pods (k8s.io/kubernetes
// pkg/controller/job, addCompletionIndexEnvVariables).
const completionIndexEnvName = "JOB_COMPLETION_INDEX"

// completionIndexEnv is the JOB_COMPLETION_INDEX variable the Job
// controller appended to the pod's containers, or nil. The controller adds
// it when it creates the pod from the template, so the containers `webhook
// inject` writes into a Job's template get it, and those mlplane adds to a
// served pod come too late: they get it here, as the controller gives it
// (appended, from the pod's completion index), so that offline and served
// give the same pod. Only a pod of an Indexed Job (with
// batch.kubernetes.io/job-completion-index) is concerned.
func completionIndexEnv(pod *corev1.Pod) *corev1.EnvVar {
	if _, ok := pod.Annotations[batchv1.JobCompletionIndexAnnotation]; !ok {
		return nil
	}
	for _, cs := range [2][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for i := range c.Env {
				if e := &c.Env[i]; e.Name == completionIndexEnvName && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
					strings.Contains(e.ValueFrom.FieldRef.FieldPath, batchv1.JobCompletionIndexAnnotation) {
					return e
				}
			}
		}
	}
	return nil
}
