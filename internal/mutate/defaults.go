package mutate

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The API server's defaulting (issue 14 kind 7). The served webhook sees a
// pod the API server has already defaulted; `webhook inject` sees a pod
// template nobody has defaulted (the API server defaults a Pod's requests
// from its limits, but never a template's). The mutation reads container
// resources, so the two would differ: a container with limits and no
// requests got the profile's smaller requests offline (QoS Guaranteed
// became Burstable) and kept requests = limits when served. Mutate
// therefore first applies, to a copy, the defaulting the mutation depends
// on, and puts the operations that do it at the head of the patch: none
// for a pod the API server sent, the defaulting itself for a template.
//
// What is applied, as k8s.io/kubernetes v1.37 pkg/apis/core/v1/defaults.go
// does it (k8s.io/kubernetes is not imported: a module that requires it
// must replace each of its ~30 staging modules):
//   - SetDefaults_Pod: for each container and init container with limits,
//     every resource with a limit and no request gets a request equal to
//     the limit;
//   - SetDefaults_ResourceList: every quantity of a container's requests and
//     limits, and of the pod-level spec.resources, is rounded up to a whole
//     milli-unit (resource.Quantity.RoundUp(-3)).
//
// Left out, because the mutation reads none of it: the other defaults of
// SetDefaults_Pod and SetDefaults_PodSpec (hostPort from containerPort
// under hostNetwork, which hostPorts computes itself; enableServiceLinks;
// schedulerName; ...), and the pod-level requests, which the API server
// derives from the containers after admission (PodLevelResourcesFixDefaulting,
// on by default in 1.37: pkg/api/pod DefaultPodLevelResources, called from
// the pod strategy's PrepareForCreate).

// apiServerDefaults returns pod with the defaulting above applied and the
// patch operations that apply it to the pod's JSON: pod itself and no
// operation when there is nothing to default (every pod the API server
// sends), else a copy.
func apiServerDefaults(pod *corev1.Pod) (*corev1.Pod, []Op) {
	if !needsDefaults(pod) {
		return pod, nil
	}
	out := pod.DeepCopy()
	var ops []Op
	for _, list := range [2]struct {
		path       string
		containers []corev1.Container
	}{{"/spec/initContainers/", out.Spec.InitContainers}, {"/spec/containers/", out.Spec.Containers}} {
		for i := range list.containers {
			r := &list.containers[i].Resources
			if !resourcesNeedDefaults(r) {
				continue
			}
			defaultResources(r)
			ops = append(ops, Op{Op: "add", Path: list.path + strconv.Itoa(i) + "/resources", Value: *r})
		}
	}
	if r := out.Spec.Resources; r != nil && resourcesNeedDefaults(r) {
		defaultResources(r)
		ops = append(ops, Op{Op: "add", Path: "/spec/resources", Value: *r})
	}
	return out, ops
}

// needsDefaults reports whether apiServerDefaults changes pod. It allocates
// nothing for a pod without sub-milli quantities.
func needsDefaults(pod *corev1.Pod) bool {
	for _, cs := range [2][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if resourcesNeedDefaults(&cs[i].Resources) {
				return true
			}
		}
	}
	return pod.Spec.Resources != nil && resourcesNeedDefaults(pod.Spec.Resources)
}

// resourcesNeedDefaults reports whether defaultResources changes r.
func resourcesNeedDefaults(r *corev1.ResourceRequirements) bool {
	for name := range r.Limits {
		if _, ok := r.Requests[name]; !ok {
			return true
		}
	}
	return !milliExact(r.Limits) || !milliExact(r.Requests)
}

// defaultResources applies SetDefaults_Pod's requests from limits and
// SetDefaults_ResourceList's rounding to r, in place (r's maps are the
// copy's own).
func defaultResources(r *corev1.ResourceRequirements) {
	for name, q := range r.Limits {
		if _, ok := r.Requests[name]; !ok {
			if r.Requests == nil {
				r.Requests = make(corev1.ResourceList, len(r.Limits))
			}
			r.Requests[name] = q.DeepCopy()
		}
	}
	for _, l := range [2]corev1.ResourceList{r.Limits, r.Requests} {
		for name, q := range l {
			q.RoundUp(resource.Milli)
			l[name] = q
		}
	}
}

// milliExact reports whether every quantity of l is a whole number of
// milli-units, which SetDefaults_ResourceList leaves unchanged.
func milliExact(l corev1.ResourceList) bool {
	for _, q := range l {
		if c := q.DeepCopy(); !c.RoundUp(resource.Milli) {
			return false
		}
	}
	return true
}
