package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// MaxGPUCount bounds AnnotationGPUCount; no node has more GPUs than this.
const MaxGPUCount = 64

// MaxGPUMemoryMiB bounds the memory of one GPU: 1 TiB, in MiB. The largest
// GPUs sold today carry 288 GB (NVIDIA B300, AMD MI355X), so the bound leaves
// room for several generations, while every sum the extender forms from it
// (MaxGPUMemoryMiB on each of MaxGPUCount GPUs, the bookings of one GPU) stays
// far from int64 overflow. A per-GPU memory above it is refused wherever it
// is read: AnnotationGPUMemory, a pod's ResourceGPUMemory, a node inventory
// entry and a simulator trace.
const MaxGPUMemoryMiB = 1 << 20

// maxGPUMemory is MaxGPUMemoryMiB as a quantity of bytes, as written in a
// message.
var maxGPUMemory = resource.MustParse("1Ti")

// ErrNotPositive is the error for a quantity that is zero, negative or not a
// quantity at all.
var ErrNotPositive = errors.New("want a positive quantity of memory such as 20Gi or 16384Mi")

// ErrTooLarge is the error for a quantity above MaxGPUMemoryMiB.
var ErrTooLarge = fmt.Errorf("more than one GPU can have: want at most %s (%dMi) per GPU", maxGPUMemory.String(), MaxGPUMemoryMiB)

// ErrBareNumber is the error for a number without a unit, which ParseMemory
// wraps with a suggestion.
var ErrBareNumber = errors.New("a bare number is ambiguous (bytes in Kubernetes quantities, MiB in HAMi and KAI)")

// GPURequest is what a pod asks of the GPUs: MemoryMiB on each of Count
// distinct GPUs.
type GPURequest struct {
	MemoryMiB int64
	Count     int
}

// TotalMiB is the amount of ResourceGPUMemory the pod requests.
func (r GPURequest) TotalMiB() int64 { return r.MemoryMiB * int64(r.Count) }

// MemoryMiB converts q, a quantity of bytes of memory on one GPU, into whole
// MiB, rounded up. It returns ErrNotPositive for q <= 0 and ErrTooLarge for
// q above MaxGPUMemoryMiB, which also keeps the round-up from overflowing
// (resource.Quantity clamps 8Ei and beyond to the largest int64).
func MemoryMiB(q resource.Quantity) (int64, error) {
	switch {
	case q.Sign() <= 0:
		return 0, ErrNotPositive
	case q.Cmp(maxGPUMemory) > 0:
		return 0, ErrTooLarge
	}
	const mi = 1 << 20
	return (q.Value() + mi - 1) / mi, nil // Value: bytes, rounded up, at most 2^40
}

// ParseMemory parses the memory of one GPU, written as a Kubernetes quantity
// with a unit (20Gi, 16384Mi, 1G), into whole MiB, rounded up. Its errors:
// ErrNotPositive for a value that is not a quantity or not above zero,
// ErrBareNumber (wrapped, with a suggestion such as "write 20480Mi or 20Gi")
// for a number without a unit, which means bytes in a Kubernetes quantity but
// MiB in HAMi, KAI and mlplane's own ResourceGPUMemory, so that either
// reading would surprise someone, and ErrTooLarge above MaxGPUMemoryMiB.
func ParseMemory(v string) (int64, error) {
	s := strings.TrimSpace(v)
	q, err := resource.ParseQuantity(s)
	switch {
	case err != nil || q.Sign() <= 0:
		return 0, ErrNotPositive
	case s[len(s)-1] >= '0' && s[len(s)-1] <= '9': // no unit suffix
		return 0, fmt.Errorf("%w: write %s", ErrBareNumber, withUnit(s))
	}
	return MemoryMiB(q)
}

// ParseGPUMemory parses AnnotationGPUMemory as ParseMemory does; the error
// names the annotation and the value.
func ParseGPUMemory(v string) (int64, error) {
	mib, err := ParseMemory(v)
	if err != nil {
		return 0, fmt.Errorf("annotation %s: invalid value %q: %w", AnnotationGPUMemory, v, err)
	}
	return mib, nil
}

// withUnit suggests how to write the bare number s, read as MiB, with a unit.
func withUnit(s string) string {
	n, err := strconv.ParseInt(strings.TrimPrefix(s, "+"), 10, 64)
	switch {
	case err != nil || n > MaxGPUMemoryMiB:
		return "a quantity with a unit such as 20Gi or 16384Mi"
	case n%1024 == 0:
		return fmt.Sprintf("%dMi or %dGi", n, n/1024)
	default:
		return fmt.Sprintf("%dMi", n)
	}
}

// ParseGPUCount parses AnnotationGPUCount; an empty value is 1.
func ParseGPUCount(v string) (int, error) {
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > MaxGPUCount {
		return 0, fmt.Errorf("annotation %s: invalid value %q: want a whole number from 1 to %d", AnnotationGPUCount, v, MaxGPUCount)
	}
	return n, nil
}

// GPURequestFromAnnotations reads a pod's GPU request from its annotations.
// ok is false when the pod has no AnnotationGPUMemory.
func GPURequestFromAnnotations(ann map[string]string) (req GPURequest, ok bool, err error) {
	mem, has := ann[AnnotationGPUMemory]
	if !has {
		if _, hasCount := ann[AnnotationGPUCount]; hasCount {
			return GPURequest{}, false, fmt.Errorf("annotation %s is set without %s", AnnotationGPUCount, AnnotationGPUMemory)
		}
		return GPURequest{}, false, nil
	}
	mib, err := ParseGPUMemory(mem)
	if err != nil {
		return GPURequest{}, false, err
	}
	n, err := ParseGPUCount(ann[AnnotationGPUCount])
	if err != nil {
		return GPURequest{}, false, err
	}
	return GPURequest{MemoryMiB: mib, Count: n}, true, nil
}
