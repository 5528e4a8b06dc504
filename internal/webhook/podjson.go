package webhook

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kjson "sigs.k8s.io/json"
)

// podIn is the part of a Pod that internal/mutate reads, for
// sigs.k8s.io/json to decode: the API server's own decoder, which matches
// keys case-sensitively, so that a differently cased duplicate key
// ("Containers" beside "containers"), which the API server drops, cannot
// hide a container from the webhook. Every other field is skipped, not
// decoded: a wrong JSON type there is the API server's to report, as it
// validates the pod after the patch. TestPodInMutatesAsWholePod checks that
// the mutator answers podIn's pod as it answers the whole pod.
type podIn struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers          []containerIn `json:"containers"`
		InitContainers      []containerIn `json:"initContainers"`
		EphemeralContainers []struct {
			Name string          `json:"name"`
			Env  []corev1.EnvVar `json:"env"`
		} `json:"ephemeralContainers"`
		Volumes       []corev1.Volume `json:"volumes"` // whole: Pod Security judges their types
		SchedulerName string          `json:"schedulerName"`
		// What Pod Security and the OS checks read (internal/mutate/podsecurity.go).
		SecurityContext *corev1.PodSecurityContext `json:"securityContext"`
		OS              *corev1.PodOS              `json:"os"`
		HostNetwork     bool                       `json:"hostNetwork"`
		HostPID         bool                       `json:"hostPID"`
		HostIPC         bool                       `json:"hostIPC"`
		HostUsers       *bool                      `json:"hostUsers"`
		// The pod-level budget (internal/mutate/conflicts.go).
		Resources *corev1.ResourceRequirements `json:"resources"`
	} `json:"spec"`
}

// containerIn is the part of a container or init container the mutator
// reads.
type containerIn struct {
	Name         string                      `json:"name"`
	Env          []corev1.EnvVar             `json:"env"`
	VolumeMounts []corev1.VolumeMount        `json:"volumeMounts"`
	Resources    corev1.ResourceRequirements `json:"resources"`
	// A native sidecar's GPU memory counts beside the main containers'.
	RestartPolicy *corev1.ContainerRestartPolicy `json:"restartPolicy"`
	// What Pod Security reads of a container.
	SecurityContext *corev1.SecurityContext `json:"securityContext"`
	Ports           []corev1.ContainerPort  `json:"ports"`
	LivenessProbe   *corev1.Probe           `json:"livenessProbe"`
	ReadinessProbe  *corev1.Probe           `json:"readinessProbe"`
	StartupProbe    *corev1.Probe           `json:"startupProbe"`
	Lifecycle       *corev1.Lifecycle       `json:"lifecycle"`
}

// decodePod decodes the podIn fields of the Pod in data (JSON) with
// sigs.k8s.io/json. A syntax error, or a wrong JSON type in a field it
// reads, is returned as decoding a whole corev1.Pod words it (the API
// types' names, the earliest error), so that the message names the real
// types.
func decodePod(data []byte) (*corev1.Pod, error) {
	var in podIn
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &in); err != nil {
		if werr := kjson.UnmarshalCaseSensitivePreserveInts(data, new(corev1.Pod)); werr != nil {
			err = werr
		}
		return nil, err
	}
	return in.pod(), nil
}

// pod is the corev1.Pod of the decoded fields.
func (in *podIn) pod() *corev1.Pod {
	m, s := &in.Metadata, &in.Spec
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: m.Name, GenerateName: m.GenerateName, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations},
		Spec: corev1.PodSpec{
			Containers: containers(s.Containers), InitContainers: containers(s.InitContainers), Volumes: s.Volumes,
			SchedulerName: s.SchedulerName, SecurityContext: s.SecurityContext, OS: s.OS,
			HostNetwork: s.HostNetwork, HostPID: s.HostPID, HostIPC: s.HostIPC, HostUsers: s.HostUsers,
			Resources: s.Resources,
		},
	}
	if s.EphemeralContainers != nil {
		p.Spec.EphemeralContainers = make([]corev1.EphemeralContainer, len(s.EphemeralContainers))
		for i, c := range s.EphemeralContainers {
			p.Spec.EphemeralContainers[i].Name, p.Spec.EphemeralContainers[i].Env = c.Name, c.Env
		}
	}
	return p
}

// containers converts a decoded list, nil to nil and empty to empty, as the
// decoder leaves them.
func containers(in []containerIn) []corev1.Container {
	if in == nil {
		return nil
	}
	out := make([]corev1.Container, len(in))
	for i := range in {
		c := &in[i]
		out[i] = corev1.Container{Name: c.Name, Env: c.Env, VolumeMounts: c.VolumeMounts, Resources: c.Resources,
			RestartPolicy: c.RestartPolicy, SecurityContext: c.SecurityContext, Ports: c.Ports,
			LivenessProbe: c.LivenessProbe, ReadinessProbe: c.ReadinessProbe, StartupProbe: c.StartupProbe, Lifecycle: c.Lifecycle}
	}
	return out
}
