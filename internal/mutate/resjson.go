package mutate

import (
	"encoding/json"
	"reflect"
	"slices"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// resourcesValue is the value of a patch operation that writes a container's
// resources. It marshals exactly like corev1.ResourceRequirements, without
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

// AppendPatch appends ops as JSON to dst: the bytes json.Marshal(ops)
// writes, without encoding/json's reflection where the value's type is one
// the builder makes often (strings, maps of strings, resources), nor its
// validation and compaction of what resourcesValue.MarshalJSON writes.
// Other values, containers and volumes, go through json.Marshal one by one.
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
		default:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			dst = append(dst, b...)
		}
		dst = append(dst, '}')
	}
	return append(dst, ']'), nil
}

// appendStringMap writes m as encoding/json does: null for nil, keys sorted.
func appendStringMap(buf []byte, m map[string]string) []byte {
	if m == nil {
		return append(buf, "null"...)
	}
	var keyBuf [16]string
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
		buf = AppendJSONString(buf, k)
		buf = append(buf, ':')
		buf = AppendJSONString(buf, m[k])
	}
	return append(buf, '}')
}

func appendResourceList(buf []byte, l corev1.ResourceList) []byte {
	var keyBuf [8]corev1.ResourceName
	keys := keyBuf[:0]
	for k := range l {
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
		buf = appendQuantity(buf, l[k])
	}
	return append(buf, '}')
}

func appendQuantity(buf []byte, q resource.Quantity) []byte {
	var scratch [32]byte
	number, suffix := q.CanonicalizeBytes(scratch[:0])
	buf = append(buf, '"')
	buf = append(buf, number...)
	buf = append(buf, suffix...)
	return append(buf, '"')
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
