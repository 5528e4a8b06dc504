package webhook

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	kjson "sigs.k8s.io/json"
)

// onePass reads the AdmissionReview the API server sends for a pod in one
// hand-written pass over the JSON, with no reflection: the review's fields
// as encoding/json reads them into reviewIn, and the pod's fields that
// internal/mutate reads (PodFields) as sigs.k8s.io/json reads them into a
// corev1.Pod. Every other value is checked to be JSON and skipped, not
// decoded: its type is the API server's to check, as it does for the pod
// the patch makes.
//
// It returns nil for anything it cannot take exactly as those decoders
// would, which readReview then decodes the two-step way (and words the
// error, if there is one): a review without a request or an object, a key
// written with an escape or a non-ASCII letter where a field is matched, a
// review key in another case (encoding/json would match it), a field given
// twice (the decoders would merge the two), a string with invalid UTF-8 or
// an escaped surrogate (they would replace it), a value of the wrong JSON
// type, nesting deeper than maxDepth, and any JSON syntax error. Rare
// fields of a complex type (an env var's valueFrom, resources.claims) are
// handed to sigs.k8s.io/json as the raw value.
func onePass(data []byte) *reviewIn {
	d := jdec{data: data}
	var r reviewIn
	if !d.review(&r) || d.peek() != 0 || d.i != len(d.data) || r.Request == nil || r.Request.pod == nil {
		return nil
	}
	return &r
}

// PodFields are the fields of a Pod that onePass decodes, as JSON paths
// ([] for each item of a list): what internal/mutate and the handler read.
// A test mutates pods with every field filled through both decodes and
// compares the patches, so a mutator reading another field fails it.
var PodFields = []string{
	"metadata.name", "metadata.generateName", "metadata.namespace", "metadata.labels", "metadata.annotations",
	"spec.schedulerName", "spec.volumes (all of it)", "spec.ephemeralContainers[].name",
	"spec.securityContext", "spec.os", "spec.hostNetwork", "spec.hostPID", "spec.hostIPC", "spec.hostUsers",
	"spec.containers[] and spec.initContainers[]: name, env, volumeMounts, resources, restartPolicy, securityContext, ports, livenessProbe, readinessProbe, startupProbe, lifecycle (each all of it)",
}

// maxDepth bounds the nesting onePass follows (encoding/json refuses more
// than 10,000 levels; the two-step decode takes what is between).
const maxDepth = 1000

// jdec is onePass's reader: data, the position, the nesting. Its methods
// return false on anything onePass leaves to the two-step decode.
type jdec struct {
	data  []byte
	i     int
	depth int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// peek skips white space and returns the next byte, 0 at the end.
func (d *jdec) peek() byte {
	for d.i < len(d.data) {
		if c := d.data[d.i]; !isSpace(c) {
			return c
		}
		d.i++
	}
	return 0
}

// null consumes a null if one is next.
func (d *jdec) null() bool {
	if d.peek() == 'n' && bytes.HasPrefix(d.data[d.i:], litNull) {
		d.i += len(litNull)
		return true
	}
	return false
}

var (
	litNull  = []byte("null")
	litTrue  = []byte("true")
	litFalse = []byte("false")
)

// object reads the object next in d (or null, when nullOK, as no member),
// calling member for each with its key, which holds no escape and only
// ASCII, and d at the value, which member must consume. seen tracks the
// keys member reports as fields by returning their bit: a second one fails.
func (d *jdec) object(nullOK bool, member func(key []byte) (bit uint32, ok bool)) bool {
	if nullOK && d.null() {
		return true
	}
	var seen uint32
	_, ok := d.items('{', '}', func() bool {
		key, ok := d.key()
		if !ok {
			return false
		}
		bit, ok := member(key)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
	return ok
}

// items reads the object or array next in d (open '{' and close '}', or
// '[' and ']'), calling item to read each member or item; empty reports {}
// or [].
func (d *jdec) items(open, close byte, item func() bool) (empty, ok bool) {
	if d.peek() != open {
		return false, false
	}
	d.i++
	if d.depth++; d.depth > maxDepth {
		return false, false
	}
	if d.peek() == close {
		d.i++
		d.depth--
		return true, true
	}
	for {
		if !item() {
			return false, false
		}
		switch d.peek() {
		case ',':
			d.i++
		case close:
			d.i++
			d.depth--
			return false, true
		default:
			return false, false
		}
	}
}

// key reads a member's key and its colon: a key with an escape or a byte
// outside printable ASCII fails.
func (d *jdec) key() ([]byte, bool) {
	if d.peek() != '"' {
		return nil, false
	}
	start := d.i + 1
	end := start
	for ; end < len(d.data); end++ {
		c := d.data[end]
		if c == '"' {
			break
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return nil, false
		}
	}
	if end >= len(d.data) {
		return nil, false
	}
	d.i = end + 1
	if d.peek() != ':' {
		return nil, false
	}
	d.i++
	return d.data[start:end], true
}

// array reads the array next in d (null: no item; [] an empty, non-nil
// list, as the decoders make it), calling item with d at each item.
func (d *jdec) array(item func() bool) (isNull, ok bool) {
	if d.null() {
		return true, true
	}
	_, ok = d.items('[', ']', item)
	return false, ok
}

// str reads a string into *s; null leaves *s as it is, as the decoders do.
func (d *jdec) str(s *string) bool {
	if d.null() {
		return true
	}
	v, ok := d.stringValue()
	if ok {
		*s = v
	}
	return ok
}

// stringValue reads a string (not null).
func (d *jdec) stringValue() (string, bool) {
	if d.peek() != '"' {
		return "", false
	}
	start := d.i + 1
	for j := start; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			d.i = j + 1
			return string(d.data[start:j]), true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return d.unquote(start)
		}
	}
	return "", false
}

// unquote reads the rest of a string that holds escapes or non-ASCII bytes,
// from data[start:] (after the opening quote).
func (d *jdec) unquote(start int) (string, bool) {
	b := make([]byte, 0, 64)
	for j := start; j < len(d.data); {
		c := d.data[j]
		switch {
		case c == '"':
			d.i = j + 1
			return string(b), true
		case c < 0x20:
			return "", false
		case c == '\\':
			if j+1 >= len(d.data) {
				return "", false
			}
			switch e := d.data[j+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := hex4(d.data[j+2:])
				if !ok || utf16.IsSurrogate(r) { // surrogates: the decoders' replacement rules
					return "", false
				}
				b = utf8.AppendRune(b, r)
				j += 4
			default:
				return "", false
			}
			j += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			j++
		default:
			r, n := utf8.DecodeRune(d.data[j:])
			if r == utf8.RuneError && n == 1 { // the decoders would replace it
				return "", false
			}
			b = append(b, d.data[j:j+n]...)
			j += n
		}
	}
	return "", false
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// boolean reads true or false into *v; null leaves it.
func (d *jdec) boolean(v *bool) bool {
	switch d.peek() {
	case 'n':
		return d.null()
	case 't':
		if bytes.HasPrefix(d.data[d.i:], litTrue) {
			d.i += len(litTrue)
			*v = true
			return true
		}
	case 'f':
		if bytes.HasPrefix(d.data[d.i:], litFalse) {
			d.i += len(litFalse)
			*v = false
			return true
		}
	}
	return false
}

// raw skips the value next in d and returns its bytes.
func (d *jdec) raw() ([]byte, bool) {
	d.peek()
	start := d.i
	if !d.skip() {
		return nil, false
	}
	return d.data[start:d.i], true
}

// skip checks that the value next in d is JSON and moves past it.
func (d *jdec) skip() bool {
	switch c := d.peek(); c {
	case '{':
		_, ok := d.items('{', '}', func() bool {
			if d.peek() != '"' || !d.skipString() || d.peek() != ':' {
				return false
			}
			d.i++
			return d.skip()
		})
		return ok
	case '[':
		_, ok := d.array(d.skip)
		return ok
	case '"':
		return d.skipString()
	case 't', 'f', 'n':
		for _, lit := range [][]byte{litTrue, litFalse, litNull} {
			if bytes.HasPrefix(d.data[d.i:], lit) {
				d.i += len(lit)
				return true
			}
		}
		return false
	default:
		return d.skipNumber()
	}
}

// skipString moves past the string at d.i, checking its escapes (a skipped
// string may hold any other byte but a control character, as for the
// decoders, which replace invalid UTF-8).
func (d *jdec) skipString() bool {
	for j := d.i + 1; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			d.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if j+1 >= len(d.data) {
				return false
			}
			switch d.data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j++
			case 'u':
				if _, ok := hex4(d.data[j+2:]); !ok {
					return false
				}
				j += 5
			default:
				return false
			}
		}
	}
	return false
}

// skipNumber moves past a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *jdec) skipNumber() bool {
	b, j := d.data, d.i
	digits := func() bool {
		k := j
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		return j > k
	}
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && '1' <= b[j] && b[j] <= '9':
		digits()
	default:
		return false
	}
	if j < len(b) && b[j] == '.' {
		j++
		if !digits() {
			return false
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if !digits() {
			return false
		}
	}
	d.i = j
	return true
}

// delegate decodes the value next in d into v with sigs.k8s.io/json.
func (d *jdec) delegate(v any) bool {
	b, ok := d.raw()
	return ok && kjson.UnmarshalCaseSensitivePreserveInts(b, v) == nil
}

// review reads the AdmissionReview. Its keys, the request's and the
// GroupVersionKind's are matched as encoding/json matches them: any other
// key that equals one of them but for case fails the pass.
func (d *jdec) review(r *reviewIn) bool {
	return d.object(false, func(key []byte) (uint32, bool) {
		switch string(key) {
		case "kind":
			return 1, d.str(&r.Kind)
		case "apiVersion":
			return 2, d.str(&r.APIVersion)
		case "request":
			r.Request = new(requestIn)
			return 4, d.request(r.Request)
		}
		return 0, !foldsToReviewKey(key) && d.skip()
	})
}

func (d *jdec) request(r *requestIn) bool {
	return d.object(false, func(key []byte) (uint32, bool) {
		switch string(key) {
		case "uid":
			return 1, d.str((*string)(&r.UID))
		case "kind":
			return 2, d.object(true, func(key []byte) (uint32, bool) {
				switch string(key) {
				case "group":
					return 1, d.str(&r.Kind.Group)
				case "version":
					return 2, d.str(&r.Kind.Version)
				case "kind":
					return 4, d.str(&r.Kind.Kind)
				}
				return 0, !foldsToReviewKey(key) && d.skip()
			})
		case "subResource":
			return 4, d.str(&r.SubResource)
		case "namespace":
			return 8, d.str(&r.Namespace)
		case "operation":
			return 16, d.str((*string)(&r.Operation))
		case "object":
			if d.null() {
				return 32, true // no pod: the two-step decode's case
			}
			r.pod = new(corev1.Pod)
			return 32, d.pod(r.pod)
		}
		return 0, !foldsToReviewKey(key) && d.skip()
	})
}

// foldsToReviewKey reports whether key is one of reviewKeys but for case.
func foldsToReviewKey(key []byte) bool {
	if len(key) >= len(reviewKeysByLen) {
		return false
	}
	for _, k := range reviewKeysByLen[len(key)] {
		if equalFoldLetters(key, k) {
			return true
		}
	}
	return false
}

// reviewKeys are the JSON names of the fields of reviewIn, requestIn and
// metav1.GroupVersionKind: the keys encoding/json also matches in another
// case, and sigs.k8s.io/json does not.
var reviewKeys = []string{"kind", "apiVersion", "request", "uid", "subResource", "namespace", "operation", "object", "group", "version"}

// reviewKeysByLen are reviewKeys by length.
var reviewKeysByLen = func() (t [len("subResource") + 1][]string) {
	for _, k := range reviewKeys {
		t[len(k)] = append(t[len(k)], k)
	}
	return t
}()

// equalFoldLetters reports whether ASCII b equals the letters of name but
// for case, as encoding/json's folding compares them.
func equalFoldLetters(b []byte, name string) bool {
	for i := range len(b) {
		if b[i]|0x20 != name[i]|0x20 { // only letters fold onto letters
			return false
		}
	}
	return true
}

// From here on, sigs.k8s.io/json's rules: keys match exactly.

func (d *jdec) pod(p *corev1.Pod) bool {
	return d.object(false, func(key []byte) (uint32, bool) {
		switch string(key) {
		case "metadata":
			return 1, d.object(true, func(key []byte) (uint32, bool) {
				m := &p.ObjectMeta
				switch string(key) {
				case "name":
					return 1, d.str(&m.Name)
				case "generateName":
					return 2, d.str(&m.GenerateName)
				case "namespace":
					return 4, d.str(&m.Namespace)
				case "labels":
					return 8, d.stringMap(&m.Labels)
				case "annotations":
					return 16, d.stringMap(&m.Annotations)
				}
				return 0, d.skip()
			})
		case "spec":
			return 2, d.spec(&p.Spec)
		}
		return 0, d.skip()
	})
}

func (d *jdec) spec(s *corev1.PodSpec) bool {
	return d.object(true, func(key []byte) (uint32, bool) {
		switch string(key) {
		case "containers":
			return 1, d.containers(&s.Containers)
		case "initContainers":
			return 2, d.containers(&s.InitContainers)
		case "ephemeralContainers":
			return 4, list(d, &s.EphemeralContainers, func(c *corev1.EphemeralContainer) bool {
				return d.object(true, func(key []byte) (uint32, bool) {
					if string(key) == "name" {
						return 1, d.str(&c.Name)
					}
					return 0, d.skip()
				})
			})
		case "volumes": // whole: Pod Security judges their types
			return 8, list(d, &s.Volumes, func(v *corev1.Volume) bool { return d.delegate(v) })
		case "schedulerName":
			return 16, d.str(&s.SchedulerName)
		// What Pod Security and the OS checks read (internal/mutate/podsecurity.go).
		case "securityContext":
			return 32, d.delegate(&s.SecurityContext)
		case "os":
			return 64, d.delegate(&s.OS)
		case "hostNetwork":
			return 128, d.boolean(&s.HostNetwork)
		case "hostPID":
			return 256, d.boolean(&s.HostPID)
		case "hostIPC":
			return 512, d.boolean(&s.HostIPC)
		case "hostUsers":
			return 1024, d.delegate(&s.HostUsers)
		}
		return 0, d.skip()
	})
}

// list reads a JSON array into *s as the decoders do: null a nil list, []
// an empty one, a null item the zero item.
func list[T any](d *jdec, s *[]T, item func(*T) bool) bool {
	isNull, ok := d.array(func() bool {
		*s = append(*s, *new(T))
		return d.null() || item(&(*s)[len(*s)-1])
	})
	if ok && !isNull && *s == nil {
		*s = []T{}
	}
	if isNull {
		*s = nil
	}
	return ok
}

func (d *jdec) containers(s *[]corev1.Container) bool {
	return list(d, s, func(c *corev1.Container) bool {
		return d.object(true, func(key []byte) (uint32, bool) {
			switch string(key) {
			case "name":
				return 1, d.str(&c.Name)
			case "env":
				return 2, list(d, &c.Env, d.envVar)
			case "volumeMounts":
				return 4, list(d, &c.VolumeMounts, d.volumeMount)
			case "restartPolicy": // a native sidecar's GPU memory counts beside the main containers'
				if d.null() {
					c.RestartPolicy = nil
					return 16, true
				}
				v, ok := d.stringValue()
				if ok {
					c.RestartPolicy = new(corev1.ContainerRestartPolicy(v))
				}
				return 16, ok
			case "resources":
				return 8, d.object(true, func(key []byte) (uint32, bool) {
					r := &c.Resources
					switch string(key) {
					case "limits":
						return 1, d.resourceList(&r.Limits)
					case "requests":
						return 2, d.resourceList(&r.Requests)
					case "claims":
						return 4, d.delegate(&r.Claims)
					}
					return 0, d.skip()
				})
			// What Pod Security reads of a container.
			case "securityContext":
				return 32, d.delegate(&c.SecurityContext)
			case "ports":
				return 64, d.delegate(&c.Ports)
			case "livenessProbe":
				return 128, d.delegate(&c.LivenessProbe)
			case "readinessProbe":
				return 256, d.delegate(&c.ReadinessProbe)
			case "startupProbe":
				return 512, d.delegate(&c.StartupProbe)
			case "lifecycle":
				return 1024, d.delegate(&c.Lifecycle)
			}
			return 0, d.skip()
		})
	})
}

func (d *jdec) envVar(e *corev1.EnvVar) bool {
	return d.object(true, func(key []byte) (uint32, bool) {
		switch string(key) {
		case "name":
			return 1, d.str(&e.Name)
		case "value":
			return 2, d.str(&e.Value)
		case "valueFrom":
			return 4, d.delegate(&e.ValueFrom)
		}
		return 0, d.skip()
	})
}

func (d *jdec) volumeMount(m *corev1.VolumeMount) bool {
	return d.object(true, func(key []byte) (uint32, bool) {
		switch string(key) {
		case "name":
			return 1, d.str(&m.Name)
		case "readOnly":
			return 2, d.boolean(&m.ReadOnly)
		case "recursiveReadOnly":
			return 4, strPtr(d, &m.RecursiveReadOnly)
		case "mountPath":
			return 8, d.str(&m.MountPath)
		case "subPath":
			return 16, d.str(&m.SubPath)
		case "mountPropagation":
			return 32, strPtr(d, &m.MountPropagation)
		case "subPathExpr":
			return 64, d.str(&m.SubPathExpr)
		}
		return 0, d.skip()
	})
}

// strPtr reads a string into a new *p; null makes *p nil.
func strPtr[S ~string](d *jdec, p **S) bool {
	if d.null() {
		*p = nil
		return true
	}
	s, ok := d.stringValue()
	if ok {
		v := S(s)
		*p = &v
	}
	return ok
}

// stringMap reads an object of strings (null: nil; a null value: "").
func (d *jdec) stringMap(m *map[string]string) bool {
	return d.mapOf(func(k string) bool {
		if *m == nil {
			*m = map[string]string{}
		}
		var v string
		if !d.str(&v) {
			return false
		}
		(*m)[k] = v
		return true
	}, func() { *m = nil }, func() {
		if *m == nil {
			*m = map[string]string{}
		}
	})
}

// resourceList reads an object of quantities; each value goes to
// Quantity.UnmarshalJSON as it is, as the decoders hand it over.
func (d *jdec) resourceList(m *corev1.ResourceList) bool {
	return d.mapOf(func(k string) bool {
		b, ok := d.raw()
		if !ok {
			return false
		}
		var q resource.Quantity
		if q.UnmarshalJSON(b) != nil {
			return false
		}
		if *m == nil {
			*m = corev1.ResourceList{}
		}
		(*m)[corev1.ResourceName(k)] = q
		return true
	}, func() { *m = nil }, func() {
		if *m == nil {
			*m = corev1.ResourceList{}
		}
	})
}

// mapOf reads an object whose keys are any strings (escapes decoded, a
// repeated key's last value kept), calling value with d at each value;
// null calls isNull, {} isEmpty.
func (d *jdec) mapOf(value func(key string) bool, isNull, isEmpty func()) bool {
	if d.null() {
		isNull()
		return true
	}
	empty, ok := d.items('{', '}', func() bool {
		k, ok := d.stringValue()
		if !ok || d.peek() != ':' {
			return false
		}
		d.i++
		return value(k)
	})
	if ok && empty {
		isEmpty()
	}
	return ok
}
