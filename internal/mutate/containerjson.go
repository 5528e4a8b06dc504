package mutate

import (
	"reflect"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// The containers the builder adds (the loader, the templates' sidecars) and
// the volume mounts it adds are written by hand, as encoding/json writes
// them: its reflection over a Container was a fifth of a request's CPU. A
// container, port, env source, volume mount or security context with a
// field set that the hand-written code does not write goes through
// json.Marshal whole; so does everything when k8s.io/api's structs hold
// other fields than the ones below (handWritable), as a newer version's
// would. TestAppendContainer and FuzzMutate compare the bytes with
// json.Marshal's.

// handWritable is whether the structs have exactly the fields this file
// knows, in this order (the order encoding/json writes them in).
var handWritable = fieldsAre[corev1.Container]("Name", "Image", "Command", "Args", "WorkingDir", "Ports", "EnvFrom", "Env",
	"Resources", "ResizePolicy", "RestartPolicy", "RestartPolicyRules", "VolumeMounts", "VolumeDevices", "LivenessProbe",
	"ReadinessProbe", "StartupProbe", "Lifecycle", "TerminationMessagePath", "TerminationMessagePolicy", "ImagePullPolicy",
	"SecurityContext", "Stdin", "StdinOnce", "TTY") &&
	resourcesWritable &&
	fieldsAre[corev1.ContainerPort]("Name", "HostPort", "ContainerPort", "Protocol", "HostIP") &&
	fieldsAre[corev1.EnvFromSource]("Prefix", "ConfigMapRef", "SecretRef") &&
	fieldsAre[corev1.SecretEnvSource]("LocalObjectReference", "Optional") &&
	fieldsAre[corev1.ConfigMapEnvSource]("LocalObjectReference", "Optional") &&
	fieldsAre[corev1.LocalObjectReference]("Name") &&
	fieldsAre[corev1.VolumeMount]("Name", "ReadOnly", "RecursiveReadOnly", "MountPath", "SubPath", "MountPropagation", "SubPathExpr", "BindMountOptions") &&
	fieldsAre[corev1.SecurityContext]("Capabilities", "Privileged", "SELinuxOptions", "WindowsOptions", "RunAsUser", "RunAsGroup",
		"RunAsNonRoot", "ReadOnlyRootFilesystem", "AllowPrivilegeEscalation", "ProcMount", "SeccompProfile", "AppArmorProfile") &&
	fieldsAre[corev1.Capabilities]("Add", "Drop") &&
	fieldsAre[corev1.SeccompProfile]("Type", "LocalhostProfile")

func fieldsAre[T any](names ...string) bool {
	t := reflect.TypeFor[T]()
	if t.NumField() != len(names) {
		return false
	}
	for i, n := range names {
		if t.Field(i).Name != n {
			return false
		}
	}
	return true
}

// appendContainer writes c as encoding/json does.
func appendContainer(dst []byte, c *corev1.Container) ([]byte, error) {
	if c == nil {
		return append(dst, "null"...), nil
	}
	if !handWritable || len(c.ResizePolicy) > 0 || len(c.RestartPolicyRules) > 0 || len(c.VolumeDevices) > 0 ||
		c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil || c.Lifecycle != nil {
		return appendMarshal(dst, c)
	}
	dst = append(dst, `{"name":`...)
	dst = AppendJSONString(dst, c.Name)
	dst = appendOptString(dst, `,"image":`, c.Image)
	dst = appendStrings(dst, `,"command":`, c.Command)
	dst = appendStrings(dst, `,"args":`, c.Args)
	dst = appendOptString(dst, `,"workingDir":`, c.WorkingDir)
	if len(c.Ports) > 0 {
		dst = append(dst, `,"ports":`...)
		dst, _ = appendList(dst, c.Ports, appendPort)
	}
	if len(c.EnvFrom) > 0 {
		dst = append(dst, `,"envFrom":`...)
		dst, _ = appendList(dst, c.EnvFrom, appendEnvFrom)
	}
	var err error
	if len(c.Env) > 0 {
		dst = append(dst, `,"env":`...)
		if dst, err = appendList(dst, c.Env, appendEnvVar); err != nil {
			return nil, err
		}
	}
	dst = append(dst, `,"resources":`...)
	if dst, err = (*resourcesValue)(&c.Resources).appendJSON(dst); err != nil {
		return nil, err
	}
	if c.RestartPolicy != nil {
		dst = append(dst, `,"restartPolicy":`...)
		dst = AppendJSONString(dst, string(*c.RestartPolicy))
	}
	if len(c.VolumeMounts) > 0 {
		dst = append(dst, `,"volumeMounts":`...)
		dst, _ = appendList(dst, c.VolumeMounts, appendVolumeMount)
	}
	dst = appendOptString(dst, `,"terminationMessagePath":`, c.TerminationMessagePath)
	dst = appendOptString(dst, `,"terminationMessagePolicy":`, string(c.TerminationMessagePolicy))
	dst = appendOptString(dst, `,"imagePullPolicy":`, string(c.ImagePullPolicy))
	if c.SecurityContext != nil {
		dst = append(dst, `,"securityContext":`...)
		if dst, err = appendSecurityContext(dst, c.SecurityContext); err != nil {
			return nil, err
		}
	}
	dst = appendOptBool(dst, `,"stdin":true`, c.Stdin)
	dst = appendOptBool(dst, `,"stdinOnce":true`, c.StdinOnce)
	dst = appendOptBool(dst, `,"tty":true`, c.TTY)
	return append(dst, '}'), nil
}

func appendPort(dst []byte, p *corev1.ContainerPort) ([]byte, error) {
	dst = append(dst, '{')
	n := len(dst)
	if p.Name != "" {
		dst = append(dst, `"name":`...)
		dst = AppendJSONString(dst, p.Name)
	}
	if p.HostPort != 0 {
		dst = comma(dst, n)
		dst = append(dst, `"hostPort":`...)
		dst = strconv.AppendInt(dst, int64(p.HostPort), 10)
	}
	dst = comma(dst, n)
	dst = append(dst, `"containerPort":`...)
	dst = strconv.AppendInt(dst, int64(p.ContainerPort), 10)
	dst = appendOptString(dst, `,"protocol":`, string(p.Protocol))
	dst = appendOptString(dst, `,"hostIP":`, p.HostIP)
	return append(dst, '}'), nil
}

func appendEnvFrom(dst []byte, e *corev1.EnvFromSource) ([]byte, error) {
	dst = append(dst, '{')
	n := len(dst)
	if e.Prefix != "" {
		dst = append(dst, `"prefix":`...)
		dst = AppendJSONString(dst, e.Prefix)
	}
	if r := e.ConfigMapRef; r != nil {
		dst = comma(dst, n)
		dst = append(dst, `"configMapRef":`...)
		dst = appendRef(dst, r.Name, r.Optional)
	}
	if r := e.SecretRef; r != nil {
		dst = comma(dst, n)
		dst = append(dst, `"secretRef":`...)
		dst = appendRef(dst, r.Name, r.Optional)
	}
	return append(dst, '}'), nil
}

// appendRef writes a ConfigMapEnvSource or SecretEnvSource.
func appendRef(dst []byte, name string, optional *bool) []byte {
	dst = append(dst, '{')
	n := len(dst)
	if name != "" {
		dst = append(dst, `"name":`...)
		dst = AppendJSONString(dst, name)
	}
	if optional != nil {
		dst = comma(dst, n)
		dst = append(dst, `"optional":`...)
		dst = strconv.AppendBool(dst, *optional)
	}
	return append(dst, '}')
}

func appendVolumeMount(dst []byte, m *corev1.VolumeMount) ([]byte, error) {
	if m == nil {
		return append(dst, "null"...), nil
	}
	if !handWritable {
		return appendMarshal(dst, m)
	}
	dst = append(dst, `{"name":`...)
	dst = AppendJSONString(dst, m.Name)
	dst = appendOptBool(dst, `,"readOnly":true`, m.ReadOnly)
	if m.RecursiveReadOnly != nil {
		dst = append(dst, `,"recursiveReadOnly":`...)
		dst = AppendJSONString(dst, string(*m.RecursiveReadOnly))
	}
	dst = append(dst, `,"mountPath":`...)
	dst = AppendJSONString(dst, m.MountPath)
	dst = appendOptString(dst, `,"subPath":`, m.SubPath)
	if m.MountPropagation != nil {
		dst = append(dst, `,"mountPropagation":`...)
		dst = AppendJSONString(dst, string(*m.MountPropagation))
	}
	dst = appendOptString(dst, `,"subPathExpr":`, m.SubPathExpr)
	dst = appendStrings(dst, `,"bindMountOptions":`, m.BindMountOptions)
	return append(dst, '}'), nil
}

// appendSecurityContext writes the fields a loader or sidecar sets by hand;
// one with SELinux, Windows or AppArmor options goes through json.Marshal.
func appendSecurityContext(dst []byte, s *corev1.SecurityContext) ([]byte, error) {
	if s.SELinuxOptions != nil || s.WindowsOptions != nil || s.AppArmorProfile != nil {
		return appendMarshal(dst, s)
	}
	dst = append(dst, '{')
	n := len(dst)
	if c := s.Capabilities; c != nil {
		dst = append(dst, `"capabilities":{`...)
		m := len(dst)
		if len(c.Add) > 0 {
			dst = appendStrings(dst, `"add":`, c.Add)
		}
		if len(c.Drop) > 0 {
			dst = comma(dst, m)
			dst = appendStrings(dst, `"drop":`, c.Drop)
		}
		dst = append(dst, '}')
	}
	dst = appendOptBoolPtr(dst, n, `"privileged":`, s.Privileged)
	dst = appendOptIntPtr(dst, n, `"runAsUser":`, s.RunAsUser)
	dst = appendOptIntPtr(dst, n, `"runAsGroup":`, s.RunAsGroup)
	dst = appendOptBoolPtr(dst, n, `"runAsNonRoot":`, s.RunAsNonRoot)
	dst = appendOptBoolPtr(dst, n, `"readOnlyRootFilesystem":`, s.ReadOnlyRootFilesystem)
	dst = appendOptBoolPtr(dst, n, `"allowPrivilegeEscalation":`, s.AllowPrivilegeEscalation)
	if s.ProcMount != nil {
		dst = comma(dst, n)
		dst = append(dst, `"procMount":`...)
		dst = AppendJSONString(dst, string(*s.ProcMount))
	}
	if p := s.SeccompProfile; p != nil {
		dst = comma(dst, n)
		dst = append(dst, `"seccompProfile":{"type":`...)
		dst = AppendJSONString(dst, string(p.Type))
		if p.LocalhostProfile != nil {
			dst = append(dst, `,"localhostProfile":`...)
			dst = AppendJSONString(dst, *p.LocalhostProfile)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}'), nil
}

// comma separates a member from the ones written since position n.
func comma(dst []byte, n int) []byte {
	if len(dst) > n {
		return append(dst, ',')
	}
	return dst
}

// appendOptString writes key and s unless s is empty (omitempty).
func appendOptString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return AppendJSONString(append(dst, key...), s)
}

// appendOptBool writes member ("key":true) if b (omitempty).
func appendOptBool(dst []byte, member string, b bool) []byte {
	if !b {
		return dst
	}
	return append(dst, member...)
}

func appendOptBoolPtr(dst []byte, n int, key string, b *bool) []byte {
	if b == nil {
		return dst
	}
	return strconv.AppendBool(append(comma(dst, n), key...), *b)
}

func appendOptIntPtr(dst []byte, n int, key string, i *int64) []byte {
	if i == nil {
		return dst
	}
	return strconv.AppendInt(append(comma(dst, n), key...), *i, 10)
}

// appendStrings writes key and a list of strings unless it is empty
// (omitempty).
func appendStrings[S ~string](dst []byte, key string, l []S) []byte {
	if len(l) == 0 {
		return dst
	}
	dst = append(dst, key...)
	dst = append(dst, '[')
	for i, s := range l {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, string(s))
	}
	return append(dst, ']')
}
