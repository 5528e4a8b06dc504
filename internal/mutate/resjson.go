package mutate

import (
	"encoding/json"
	"slices"

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
	buf := make([]byte, 0, 192)
	buf = append(buf, '{')
	if len(r.Limits) > 0 {
		buf = append(buf, `"limits":`...)
		buf = appendResourceList(buf, r.Limits)
	}
	if len(r.Requests) > 0 {
		if len(buf) > 1 {
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
		if len(buf) > 1 {
			buf = append(buf, ',')
		}
		buf = append(buf, `"claims":`...)
		buf = append(buf, claims...)
	}
	return append(buf, '}'), nil
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
		buf = appendJSONString(buf, string(k))
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

// appendJSONString quotes s; names the API server accepted need no escaping,
// anything else goes through encoding/json.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}
