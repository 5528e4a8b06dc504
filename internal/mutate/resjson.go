package mutate

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// resourcesValue is the value of a patch operation that writes a container's
// resources. It marshals exactly like corev1.ResourceRequirements (each
// quantity as Quantity.MarshalJSON writes it), without
// encoding/json's reflection over maps of Quantity (an allocation or two per
// entry), which is most of what encoding a patch costs.
type resourcesValue corev1.ResourceRequirements

var _ json.Marshaler = (*resourcesValue)(nil)

// MarshalJSON writes {"claims":...,"limits":{...},"requests":{...}}, keys
// sorted, as encoding/json does.
func (r *resourcesValue) MarshalJSON() ([]byte, error) {
	return r.appendJSON(make([]byte, 0, 192))
}

func (r *resourcesValue) appendJSON(buf []byte) ([]byte, error) {
	if !resourcesWritable { // k8s.io/api added a field: encoding/json knows it
		b, err := json.Marshal((*corev1.ResourceRequirements)(r))
		return append(buf, b...), err
	}
	start := len(buf)
	buf = append(buf, '{')
	if len(r.Limits) > 0 {
		buf = append(buf, `"limits":`...)
		buf = appendResourceList(buf, r.Limits)
	}
	if len(r.Requests) > 0 {
		if len(buf) > start+1 {
			buf = append(buf, ',')
		}
		buf = append(buf, `"requests":`...)
		buf = appendResourceList(buf, r.Requests)
	}
	if len(r.Claims) > 0 {
		claims, err := json.Marshal(r.Claims)
		if err != nil {
			return nil, err
		}
		if len(buf) > start+1 {
			buf = append(buf, ',')
		}
		buf = append(buf, `"claims":`...)
		buf = append(buf, claims...)
	}
	return append(buf, '}'), nil
}

// resourcesWritable is whether ResourceRequirements has exactly the fields
// appendJSON writes.
var resourcesWritable = fieldsAre[corev1.ResourceRequirements]("Limits", "Requests", "Claims")

// AppendPatch appends ops as JSON to dst: the bytes json.Marshal(ops)
// writes, without encoding/json's reflection where the value's type is one
// the builder makes (strings, maps of strings, resources, env vars,
// volumes, containers, volume mounts; containerjson.go), nor its validation
// and compaction of what resourcesValue.MarshalJSON writes. Other values go
// through json.Marshal one by one. TestAppendPatch and FuzzMutate compare
// the two; a field a newer k8s.io/api adds without omitempty would show
// there.
func AppendPatch(dst []byte, ops []Op) ([]byte, error) {
	if ops == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, '[')
	for i := range ops {
		op := &ops[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"op":`...)
		dst = AppendJSONString(dst, op.Op)
		dst = append(dst, `,"path":`...)
		dst = AppendJSONString(dst, op.Path)
		dst = append(dst, `,"value":`...)
		var err error
		switch v := op.Value.(type) {
		case string:
			dst = AppendJSONString(dst, v)
		case map[string]string:
			dst = appendStringMap(dst, v)
		case *resourcesValue:
			if v == nil {
				dst = append(dst, "null"...)
			} else if dst, err = v.appendJSON(dst); err != nil {
				return nil, &json.MarshalerError{Type: reflect.TypeFor[*resourcesValue](), Err: err}
			}
		case corev1.EnvVar:
			dst, err = appendEnvVar(dst, &v)
		case []corev1.EnvVar:
			dst, err = appendList(dst, v, appendEnvVar)
		case *corev1.Volume:
			dst, err = appendVolume(dst, v)
		case []*corev1.Volume:
			dst, err = appendList(dst, v, func(dst []byte, v **corev1.Volume) ([]byte, error) { return appendVolume(dst, *v) })
		case *corev1.Container:
			dst, err = appendContainer(dst, v)
		case []*corev1.Container:
			dst, err = appendList(dst, v, func(dst []byte, v **corev1.Container) ([]byte, error) { return appendContainer(dst, *v) })
		case *corev1.VolumeMount:
			dst, err = appendVolumeMount(dst, v)
		case []*corev1.VolumeMount:
			dst, err = appendList(dst, v, func(dst []byte, v **corev1.VolumeMount) ([]byte, error) { return appendVolumeMount(dst, *v) })
		default:
			dst, err = appendMarshal(dst, v)
		}
		if err != nil {
			return nil, err
		}
		dst = append(dst, '}')
	}
	return append(dst, ']'), nil
}

func appendMarshal(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

// appendList writes l as encoding/json does, each item with appendItem.
func appendList[T any](dst []byte, l []T, appendItem func([]byte, *T) ([]byte, error)) ([]byte, error) {
	if l == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, '[')
	for i := range l {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendItem(dst, &l[i]); err != nil {
			return nil, err
		}
	}
	return append(dst, ']'), nil
}

// appendEnvVar writes the env vars the builder makes, a value or a field
// reference, by hand; any other goes through encoding/json. The struct
// comparisons see every field, those a newer k8s.io/api adds included.
func appendEnvVar(dst []byte, e *corev1.EnvVar) ([]byte, error) {
	if *e != (corev1.EnvVar{Name: e.Name, Value: e.Value, ValueFrom: e.ValueFrom}) {
		return appendMarshal(dst, *e) // a copy, so that e does not escape
	}
	dst = append(dst, `{"name":`...)
	dst = AppendJSONString(dst, e.Name)
	if e.Value != "" {
		dst = append(dst, `,"value":`...)
		dst = AppendJSONString(dst, e.Value)
	}
	if e.ValueFrom != nil {
		dst = append(dst, `,"valueFrom":`...)
		ref := e.ValueFrom.FieldRef
		if ref == nil || *e.ValueFrom != (corev1.EnvVarSource{FieldRef: ref}) ||
			*ref != (corev1.ObjectFieldSelector{APIVersion: ref.APIVersion, FieldPath: ref.FieldPath}) {
			var err error
			if dst, err = appendMarshal(dst, e.ValueFrom); err != nil {
				return nil, err
			}
			return append(dst, '}'), nil
		}
		dst = append(dst, `{"fieldRef":{`...)
		if ref.APIVersion != "" {
			dst = append(dst, `"apiVersion":`...)
			dst = AppendJSONString(dst, ref.APIVersion)
			dst = append(dst, ',')
		}
		dst = append(dst, `"fieldPath":`...)
		dst = AppendJSONString(dst, ref.FieldPath)
		dst = append(dst, "}}"...)
	}
	return append(dst, '}'), nil
}

// appendVolume writes the volumes the builder makes, an emptyDir, a
// persistentVolumeClaim, a hostPath or an image, by hand: encoding/json's
// reflection over the 30-odd sources of a VolumeSource costs more than the
// rest of the patch. Any other volume goes through encoding/json. The
// struct comparisons see every field, those a newer k8s.io/api adds
// included.
func appendVolume(dst []byte, v *corev1.Volume) ([]byte, error) {
	if v == nil {
		return append(dst, "null"...), nil
	}
	hp, ed, pvc, img := v.HostPath, v.EmptyDir, v.PersistentVolumeClaim, v.Image
	if v.VolumeSource != (corev1.VolumeSource{HostPath: hp, EmptyDir: ed, PersistentVolumeClaim: pvc, Image: img}) ||
		hp != nil && *hp != (corev1.HostPathVolumeSource{Path: hp.Path, Type: hp.Type}) ||
		ed != nil && *ed != (corev1.EmptyDirVolumeSource{Medium: ed.Medium, SizeLimit: ed.SizeLimit, Mode: ed.Mode}) ||
		pvc != nil && *pvc != (corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.ClaimName, ReadOnly: pvc.ReadOnly}) ||
		img != nil && *img != (corev1.ImageVolumeSource{Reference: img.Reference, PullPolicy: img.PullPolicy}) {
		return appendMarshal(dst, v)
	}
	dst = append(dst, `{"name":`...)
	dst = AppendJSONString(dst, v.Name)
	// Sources and their fields in the order of their structs.
	if hp != nil {
		dst = append(dst, `,"hostPath":{"path":`...)
		dst = AppendJSONString(dst, hp.Path)
		if hp.Type != nil {
			dst = append(dst, `,"type":`...)
			dst = AppendJSONString(dst, string(*hp.Type))
		}
		dst = append(dst, '}')
	}
	if ed != nil {
		dst = append(dst, `,"emptyDir":{`...)
		n := len(dst)
		if ed.Medium != "" {
			dst = append(dst, `"medium":`...)
			dst = AppendJSONString(dst, string(ed.Medium))
		}
		if ed.SizeLimit != nil {
			dst = comma(dst, n)
			dst = append(dst, `"sizeLimit":`...)
			dst = appendQuantity(dst, *ed.SizeLimit)
		}
		if ed.Mode != nil {
			dst = comma(dst, n)
			dst = append(dst, `"mode":`...)
			dst = strconv.AppendInt(dst, int64(*ed.Mode), 10)
		}
		dst = append(dst, '}')
	}
	if pvc != nil {
		dst = append(dst, `,"persistentVolumeClaim":{"claimName":`...)
		dst = AppendJSONString(dst, pvc.ClaimName)
		if pvc.ReadOnly {
			dst = append(dst, `,"readOnly":true`...)
		}
		dst = append(dst, '}')
	}
	if img != nil {
		dst = append(dst, `,"image":{`...)
		n := len(dst)
		if img.Reference != "" {
			dst = append(dst, `"reference":`...)
			dst = AppendJSONString(dst, img.Reference)
		}
		if img.PullPolicy != "" {
			dst = comma(dst, n)
			dst = append(dst, `"pullPolicy":`...)
			dst = AppendJSONString(dst, string(img.PullPolicy))
		}
		dst = append(dst, '}')
	}
	return append(dst, '}'), nil
}

// appendStringMap writes m as encoding/json does: null for nil, keys sorted.
func appendStringMap(buf []byte, m map[string]string) []byte {
	if m == nil {
		return append(buf, "null"...)
	}
	return appendSortedMap(buf, m, AppendJSONString)
}

func appendResourceList(buf []byte, l corev1.ResourceList) []byte {
	return appendSortedMap(buf, l, appendQuantity)
}

// appendSortedMap writes a non-nil map as encoding/json does, keys sorted,
// each value by value.
func appendSortedMap[K ~string, V any](buf []byte, m map[K]V, value func([]byte, V) []byte) []byte {
	var keyBuf [16]K // on the stack for the maps a pod has
	keys := keyBuf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = AppendJSONString(buf, string(k))
		buf = append(buf, ':')
		buf = value(buf, m[k])
	}
	return append(buf, '}')
}

// appendQuantity writes q as Quantity.MarshalJSON does: the spelling it
// was parsed from, when it kept one ("+1Gi"), else its canonical form.
// (String, on this copy, returns the kept spelling without allocating, and
// allocates the canonical form only for a quantity that has none.)
func appendQuantity(buf []byte, q resource.Quantity) []byte {
	return append(append(append(buf, '"'), q.String()...), '"')
}

// AppendJSONString appends s quoted exactly as encoding/json quotes it
// (HTML characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and
// U+2029 escaped): the algorithm of its appendString, without the
// allocations json.Marshal makes for a string.
func AppendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '\\', '"':
				buf = append(buf, '\\', b)
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
