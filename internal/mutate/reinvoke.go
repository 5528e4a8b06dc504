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
// VisibleDevicesNone, as if it had been there the first time.

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
			base := list.path + strconv.Itoa(i) + "/env"
			if len(c.Env) == 0 {
				ops = append(ops, Op{Op: "add", Path: base, Value: []corev1.EnvVar{visibleDevicesVoid}})
			} else {
				ops = append(ops, Op{Op: "add", Path: base + "/0", Value: visibleDevicesVoid})
			}
		}
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return &st, ops
}
