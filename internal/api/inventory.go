package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// GPU is one entry of a node's inventory, as published by the node agent in
// the NodeAnnotationGPUs annotation (a JSON list of GPU).
type GPU struct {
	// Index is the GPU's NVML index on the node.
	Index int `json:"index"`
	// UUID is the GPU's stable identifier ("GPU-..."), what
	// NVIDIA_VISIBLE_DEVICES and AnnotationGPUIDs carry.
	UUID string `json:"uuid"`
	// Model is the product name, e.g. "NVIDIA H100 80GB HBM3".
	Model string `json:"model"`
	// MemoryMiB is the total memory of the GPU.
	MemoryMiB int64 `json:"memoryMiB"`
	// UsedMiB is the memory in use as the driver last reported it.
	UsedMiB int64 `json:"usedMiB"`
	// OutsideUsedMiB is the part of UsedMiB that no pod's processes
	// explain: processes outside Kubernetes (or in pods the agent cannot
	// map), and the driver's own use. The extender keeps it from every
	// booking. Absent when the agent could not list the GPU's processes
	// with their memory (NVML's per-process query unsupported or
	// refused), and from agents before it was added; the extender then
	// takes max(0, UsedMiB - booked) instead.
	OutsideUsedMiB *int64 `json:"outsideUsedMiB,omitempty"`
	// OverBookedMiB is the memory the GPU's pods use beyond what each
	// booked on it (the sum over pods of max(0, used - booked)); the
	// extender keeps it from bookings as it keeps OutsideUsedMiB, so that
	// no pod is placed into memory that a pod over its budget holds.
	OverBookedMiB int64 `json:"overBookedMiB,omitempty"`
	// Healthy is false when the agent has seen the GPU fail (XID errors, NVML
	// errors); the extender never places pods on an unhealthy GPU.
	Healthy bool `json:"healthy"`
}

// EncodeInventory renders an inventory as the value of NodeAnnotationGPUs.
func EncodeInventory(gpus []GPU) string {
	if gpus == nil {
		gpus = []GPU{}
	}
	b, err := json.Marshal(gpus)
	if err != nil { // a slice of plain structs always marshals
		panic(err)
	}
	return string(b)
}

// DecodeInventory parses the value of NodeAnnotationGPUs. It rejects entries
// without a UUID, duplicate UUIDs, negative sizes and sizes above
// MaxGPUMemoryMiB (which no GPU has, and which would overflow the extender's
// sums), so that consumers can trust what they get.
func DecodeInventory(s string) ([]GPU, error) {
	var gpus []GPU
	if err := json.Unmarshal([]byte(s), &gpus); err != nil {
		return nil, fmt.Errorf("annotation %s: invalid JSON: %w", NodeAnnotationGPUs, err)
	}
	seen := make(map[string]struct{}, len(gpus))
	for i, g := range gpus {
		switch {
		case g.UUID == "":
			return nil, fmt.Errorf("annotation %s: entry %d has no uuid", NodeAnnotationGPUs, i)
		case g.MemoryMiB < 0 || g.UsedMiB < 0 || g.OverBookedMiB < 0 || (g.OutsideUsedMiB != nil && *g.OutsideUsedMiB < 0):
			return nil, fmt.Errorf("annotation %s: entry %d (%s) has negative memory", NodeAnnotationGPUs, i, g.UUID)
		case g.MemoryMiB > MaxGPUMemoryMiB || g.UsedMiB > MaxGPUMemoryMiB || g.OverBookedMiB > MaxGPUMemoryMiB || (g.OutsideUsedMiB != nil && *g.OutsideUsedMiB > MaxGPUMemoryMiB):
			return nil, fmt.Errorf("annotation %s: entry %d (%s) has more memory than one GPU can have (at most %d MiB)", NodeAnnotationGPUs, i, g.UUID, MaxGPUMemoryMiB)
		}
		if _, dup := seen[g.UUID]; dup {
			return nil, fmt.Errorf("annotation %s: uuid %s appears twice", NodeAnnotationGPUs, g.UUID)
		}
		seen[g.UUID] = struct{}{}
	}
	return gpus, nil
}

// HealthyMemoryMiB is the node's allocatable ResourceGPUMemory: the sum of the
// memory of its healthy GPUs.
func HealthyMemoryMiB(gpus []GPU) int64 {
	var sum int64
	for _, g := range gpus {
		if g.Healthy {
			sum += g.MemoryMiB
		}
	}
	return sum
}

// FormatGPUIDs renders the value of AnnotationGPUIDs.
func FormatGPUIDs(uuids []string) string { return strings.Join(uuids, ",") }

// ParseGPUIDs parses the value of AnnotationGPUIDs; an empty value is no GPU.
func ParseGPUIDs(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Node agent liveness: one coordination.k8s.io Lease per node, like the
// kubelet's node leases, in LeaseNamespace and named after the node.
const (
	// LeaseNamespace holds the node agents' Leases.
	LeaseNamespace = DefaultNamespace
	// LeaseRenewInterval is how often an agent renews its Lease.
	LeaseRenewInterval = 10 * time.Second
	// LeaseDuration is the age after which the extender treats a node as
	// having no schedulable GPUs.
	LeaseDuration = 40 * time.Second
)

// LeaseName is the name of the node agent's Lease for a node.
func LeaseName(nodeName string) string { return "mlplane-gpu-" + nodeName }
