package mutate

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

// Windows pods (issue 14 kind 4). The model loader image and the GPU
// wiring (NVIDIA's container runtime reading NVIDIA_VISIBLE_DEVICES) are
// Linux-only, and the API server refuses Linux-only securityContext fields
// on a pod with spec.os.name windows, so a Windows pod that asks for either
// is denied. Everything else (a pvc:// or oci:// model mounted without a
// loader, profiles, templates without Linux-only fields) works as on Linux.

// linuxOnlyFields are the container securityContext fields the API server
// forbids when spec.os.name is windows (k8s.io/kubernetes
// pkg/apis/core/validation, validateLinux), with their JSON names.
var linuxOnlyFields = []struct {
	name string
	set  func(*corev1.SecurityContext) bool
}{
	{"seLinuxOptions", func(s *corev1.SecurityContext) bool { return s.SELinuxOptions != nil }},
	{"seccompProfile", func(s *corev1.SecurityContext) bool { return s.SeccompProfile != nil }},
	{"capabilities", func(s *corev1.SecurityContext) bool { return s.Capabilities != nil }},
	{"readOnlyRootFilesystem", func(s *corev1.SecurityContext) bool { return s.ReadOnlyRootFilesystem != nil }},
	{"privileged", func(s *corev1.SecurityContext) bool { return s.Privileged != nil }},
	{"allowPrivilegeEscalation", func(s *corev1.SecurityContext) bool { return s.AllowPrivilegeEscalation != nil }},
	{"procMount", func(s *corev1.SecurityContext) bool { return s.ProcMount != nil }},
	{"runAsUser", func(s *corev1.SecurityContext) bool { return s.RunAsUser != nil }},
	{"runAsGroup", func(s *corev1.SecurityContext) bool { return s.RunAsGroup != nil }},
	{"appArmorProfile", func(s *corev1.SecurityContext) bool { return s.AppArmorProfile != nil }},
}

// windowsErrors are the reasons to deny a Windows pod's plan p: a loader,
// GPU wiring, or a template whose container sets a Linux-only
// securityContext field. It returns nil for a pod that is not Windows.
func windowsErrors(pod *corev1.Pod, p *plan) []error {
	if !isWindows(&pod.Spec) {
		return nil
	}
	var errs []error
	if p.model != nil && p.delivery == deliverLoader {
		errs = append(errs, fmt.Errorf("annotation %s: mlplane's model loader runs on Linux only: pod spec.os.name is windows; a pvc:// model needs no loader", api.AnnotationModelURI))
	}
	if p.hasGPU {
		errs = append(errs, fmt.Errorf("annotation %s: mlplane's GPU wiring (the NVIDIA container runtime) runs on Linux only: pod spec.os.name is windows", api.AnnotationGPUMemory))
	}
	for _, t := range p.templates {
		sc := t.Container.SecurityContext
		if sc == nil {
			continue
		}
		for _, f := range linuxOnlyFields {
			if f.set(sc) {
				errs = append(errs, fmt.Errorf("annotation %s: template %q: container %q sets securityContext.%s, which is Linux-only: pod spec.os.name is windows", api.AnnotationTemplates, t.Name, t.Container.Name, f.name))
				break
			}
		}
	}
	return errs
}
