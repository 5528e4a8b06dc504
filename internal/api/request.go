package api

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// MaxGPUCount bounds AnnotationGPUCount; no node has more GPUs than this.
const MaxGPUCount = 64

// GPURequest is what a pod asks of the GPUs: MemoryMiB on each of Count
// distinct GPUs.
type GPURequest struct {
	MemoryMiB int64
	Count     int
}

// TotalMiB is the amount of ResourceGPUMemory the pod requests.
func (r GPURequest) TotalMiB() int64 { return r.MemoryMiB * int64(r.Count) }

// ParseGPUMemory parses AnnotationGPUMemory into whole MiB (rounded up).
func ParseGPUMemory(v string) (int64, error) {
	q, err := resource.ParseQuantity(strings.TrimSpace(v))
	if err != nil || q.Sign() <= 0 {
		return 0, fmt.Errorf("annotation %s: invalid value %q: want a positive quantity of memory such as 20Gi or 16384Mi", AnnotationGPUMemory, v)
	}
	const mi = 1 << 20
	b := q.Value() // bytes, rounded up
	return (b + mi - 1) / mi, nil
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
