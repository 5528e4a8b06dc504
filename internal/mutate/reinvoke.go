package mutate

import (
	"encoding/json"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

// Containers added after mlplane (issue 14 kind 8). Under the NVIDIA
// container runtime a container sees the GPUs its NVIDIA_VISIBLE_DEVICES
// names, and one that does not set it takes its image's value: CUDA base
// images say "all", every GPU of the node, those the extender gave other
// pods included. So in a pod that asks for GPU memory, mlplane gives every
// container that is not a GPU container of the pod (the serving container,
// the init containers listed in Status.GPUInitContainers)
// NVIDIA_VISIBLE_DEVICES=void (VisibleDevicesNone), unless it sets the
// variable itself. A pod without mlplane GPU memory is left as the cluster
// configures it: mlplane wires no GPU there, and a container that asks the
// NVIDIA device plugin for nvidia.com/gpu must keep the plugin's value.
//
// A webhook called after mlplane's may add containers (a proxy, an agent).
// The API server then calls mlplane's webhook again (reinvocationPolicy
// IfNeeded); the pod already carries api.AnnotationStatus, so nothing is
// injected again, but each container that lacks NVIDIA_VISIBLE_DEVICES gets
// VisibleDevicesNone, as if it had been there the first time. So does an
// ephemeral container added to a running pod (`kubectl debug`, an update of
// the pods/ephemeralcontainers subresource; see Ephemeral).

// reinvoked returns the status of an already mutated GPU pod and the
// operations that give its non-GPU containers VisibleDevicesNone where
// they lack NVIDIA_VISIBLE_DEVICES; nil and none for another pod, or one
// whose status annotation is not mlplane's JSON.
func reinvoked(pod *corev1.Pod) (*Status, []Op) {
	var st Status
	if err := json.Unmarshal([]byte(pod.Annotations[api.AnnotationStatus]), &st); err != nil || st.GPUMemoryMiB <= 0 {
		return nil, nil
	}
	var ops []Op
	for _, list := range [2]struct {
		path       string
		containers []corev1.Container
		gpu        []string
	}{{"/spec/initContainers/", pod.Spec.InitContainers, st.GPUInitContainers}, {"/spec/containers/", pod.Spec.Containers, []string{st.Container}}} {
		for i := range list.containers {
			c := &list.containers[i]
			if slices.Contains(list.gpu, c.Name) || hasEnv(c.Env, api.EnvNvidiaVisibleDevices) {
				continue
			}
			ops = append(ops, voidFirst(list.path+strconv.Itoa(i)+"/env", c.Env))
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		c := &pod.Spec.EphemeralContainers[i]
		if hasEnv(c.Env, api.EnvNvidiaVisibleDevices) {
			continue
		}
		ops = append(ops, voidFirst("/spec/ephemeralContainers/"+strconv.Itoa(i)+"/env", c.Env))
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return &st, ops
}

// voidFirst is the operation that puts visibleDevicesVoid first in env, the
// list at path.
func voidFirst(path string, env []corev1.EnvVar) Op {
	if len(env) == 0 {
		return Op{Op: "add", Path: path, Value: []corev1.EnvVar{visibleDevicesVoid}}
	}
	return Op{Op: "add", Path: path + "/0", Value: visibleDevicesVoid}
}

// Ephemeral computes the patch for an update of the pods/ephemeralcontainers
// subresource of pod, in ns: in a GPU pod mlplane mutated, every ephemeral
// container that lacks NVIDIA_VISIBLE_DEVICES gets VisibleDevicesNone (a
// debugging image built on CUDA would otherwise see every GPU of the node),
// and so does any other container that lacks it. Nothing is injected into a
// running pod; one mlplane did not mutate, or without GPUs, is left alone.
func (m *Mutator) Ephemeral(pod *corev1.Pod, ns Namespace) Result {
	var res Result
	if res.Skipped = m.skip(pod, ns, &res.Warnings); res.Skipped != SkipAlreadyMutated {
		if res.Skipped == "" { // not mutated at creation: leave it so
			res.Skipped = SkipNotMutated
		}
		return res
	}
	if st, ops := reinvoked(pod); len(ops) > 0 {
		res.Skipped, res.Patch, res.Injected = "", ops, st
	}
	return res
}
