package mutate

import (
	"path"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
)

// checkPod fails unless p passes the API server's pod validation in what
// the webhook adds or changes: container and volume names (DNS labels,
// unique), one source per volume, mounts of existing volumes at distinct
// absolute paths, valid env names, image and hostPath volumes as the API
// server accepts them, requests not above limits, no Linux-only
// securityContext field on a Windows pod. (k8s.io/kubernetes's
// validation package is not a dependency of this module.)
func checkPod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	s := &p.Spec
	containers := sets.New[string]()
	all := append(append([]corev1.Container{}, s.InitContainers...), s.Containers...)
	for _, c := range all {
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			t.Errorf("container name %q: %s", c.Name, msg)
		}
		if containers.Has(c.Name) {
			t.Errorf("container name %q twice", c.Name)
		}
		containers.Insert(c.Name)
	}
	volumes := map[string]*corev1.Volume{}
	for i := range s.Volumes {
		v := &s.Volumes[i]
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			t.Errorf("volume name %q: %s", v.Name, msg)
		}
		if volumes[v.Name] != nil {
			t.Errorf("volume name %q twice", v.Name)
		}
		volumes[v.Name] = v
		sources := 0
		src := reflect.ValueOf(v.VolumeSource)
		for j := range src.NumField() {
			if !src.Field(j).IsNil() {
				sources++
			}
		}
		if sources != 1 {
			t.Errorf("volume %q has %d sources", v.Name, sources)
		}
		if hp := v.HostPath; hp != nil {
			if !path.IsAbs(hp.Path) || strings.Contains(hp.Path, "..") {
				t.Errorf("volume %q: hostPath %q", v.Name, hp.Path)
			}
			if hp.Type != nil && *hp.Type != corev1.HostPathDirectoryOrCreate && *hp.Type != corev1.HostPathDirectory {
				t.Errorf("volume %q: hostPath type %q", v.Name, *hp.Type)
			}
		}
		if img := v.Image; img != nil {
			if img.Reference == "" {
				t.Errorf("volume %q: image without reference", v.Name)
			}
			switch img.PullPolicy {
			case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
			default:
				t.Errorf("volume %q: image pullPolicy %q", v.Name, img.PullPolicy)
			}
		}
	}
	for _, c := range all {
		paths := sets.New[string]()
		for _, m := range c.VolumeMounts {
			v := volumes[m.Name]
			switch {
			case v == nil:
				t.Errorf("container %q mounts volume %q, which the pod does not have", c.Name, m.Name)
			case v.Image != nil && !m.ReadOnly:
				t.Errorf("container %q mounts image volume %q read-write", c.Name, m.Name)
			}
			if !path.IsAbs(m.MountPath) || paths.Has(path.Clean(m.MountPath)) {
				t.Errorf("container %q: mount path %q not absolute, or twice", c.Name, m.MountPath)
			}
			paths.Insert(path.Clean(m.MountPath))
		}
		for _, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				t.Errorf("container %q: env %q: %s", c.Name, e.Name, msg)
			}
		}
		for name, req := range c.Resources.Requests {
			if lim, ok := c.Resources.Limits[name]; ok && req.Cmp(lim) > 0 {
				t.Errorf("container %q: %s request %s above limit %s", c.Name, name, req.String(), lim.String())
			}
		}
	}
	if isWindows(s) {
		for _, c := range all {
			for _, f := range linuxOnlyFields {
				if c.SecurityContext != nil && f.set(c.SecurityContext) {
					t.Errorf("container %q of a Windows pod sets securityContext.%s", c.Name, f.name)
				}
			}
		}
	}
	for _, c := range s.InitContainers {
		if rp := c.RestartPolicy; rp != nil && *rp != corev1.ContainerRestartPolicyAlways {
			t.Errorf("init container %q: restartPolicy %q", c.Name, *rp)
		}
	}
}
