package score

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// PolicyAPIVersion and PolicyKind identify a PlacementPolicy document.
const (
	PolicyAPIVersion = "mlplane.io/v1alpha1"
	PolicyKind       = "PlacementPolicy"
)

// MaxWeight bounds every weight of a PlacementPolicy.
const MaxWeight = 100

// PlacementPolicy is the cluster admin's say in where GPU pods go. The
// extender reads it from a YAML file and reloads it on change; the simulator
// takes the same file.
type PlacementPolicy struct {
	metav1.TypeMeta `json:",inline"`

	// NodeStrategy ranks nodes: binpack (default) prefers the fullest node,
	// keeping whole nodes free for large multi-GPU pods; spread the emptiest.
	NodeStrategy string `json:"nodeStrategy,omitempty"`
	// GPUStrategy chooses GPUs on a node: binpack (default) is best fit, the
	// fullest GPU that still fits; spread the emptiest GPU.
	GPUStrategy string `json:"gpuStrategy,omitempty"`
	// Weights combine the scorers into a node's score.
	Weights Weights `json:"weights"`
	// MultiGPU holds the rules for pods that need more than one GPU.
	MultiGPU MultiGPU `json:"multiGPU"`
	// AllowPodOverride lets a pod choose its strategy with annotation
	// mlplane.io/placement (default true).
	AllowPodOverride *bool `json:"allowPodOverride,omitempty"`
	// CandidateNodes is how many nodes the extender's filter hands back to
	// kube-scheduler: the best ones under this policy (default 1). With 1
	// the extender decides, as HAMi's does: kube-scheduler binds a pod with
	// one feasible node without running its score plugins or calling
	// prioritize, so placement is exactly what `extender simulate`
	// predicts, at about half the scheduler's CPU per pod. A larger number
	// lets the scheduler's own scores (preferred node affinity, soft
	// topology spread) choose among that many, with prioritize's score on
	// top; 0 hands back every node the pod fits. The scheduler's filter
	// plugins (taints, required affinity, CPU and memory) always run first.
	CandidateNodes *int32 `json:"candidateNodes,omitempty"`
}

// Weights of the scorers, each 0..MaxWeight. A node's raw score is
// node*nodeScore + gpu*gpuScore + multiGPU.fragmentation*fragScore
// - protectEmptyGPUs*10*(empty GPUs broken / GPUs picked).
type Weights struct {
	// Node weighs the node strategy's score of the whole node (default 1).
	Node *int32 `json:"node,omitempty"`
	// GPU weighs the GPU strategy's score of the GPUs picked (default 2).
	GPU *int32 `json:"gpu,omitempty"`
	// ProtectEmptyGPUs is the penalty for each whole, empty GPU a pod would
	// break into when a partly used GPU elsewhere fits it (default 3); it
	// keeps empty GPUs for the pods that need a whole one. Only binpack GPU
	// strategies apply it.
	ProtectEmptyGPUs *int32 `json:"protectEmptyGPUs,omitempty"`
}

// MultiGPU holds the rules for pods with mlplane.io/gpu-count above 1. All of
// a pod's GPUs are always on one node.
type MultiGPU struct {
	// GPUStrategy chooses the GPUs of a multi-GPU pod (default: gpuStrategy).
	GPUStrategy string `json:"gpuStrategy,omitempty"`
	// Fragmentation weighs how little free memory a placement leaves
	// stranded on partly used GPUs of the node (default 1): among nodes that
	// fit, the one left least fragmented wins.
	Fragmentation *int32 `json:"fragmentation,omitempty"`
}

// Policy defaults.
const (
	DefaultNodeWeight          int32 = 1
	DefaultGPUWeight           int32 = 2
	DefaultProtectEmptyWeight  int32 = 3
	DefaultFragmentationWeight int32 = 1
	DefaultCandidateNodes      int32 = 1
)

// DefaultPolicy is the policy used when none is configured.
func DefaultPolicy() *PlacementPolicy {
	p := &PlacementPolicy{}
	SetDefaults(p)
	return p
}

// SetDefaults fills every unset field of p, once, before validation.
func SetDefaults(p *PlacementPolicy) {
	if p.APIVersion == "" {
		p.APIVersion = PolicyAPIVersion
	}
	if p.Kind == "" {
		p.Kind = PolicyKind
	}
	if p.NodeStrategy == "" {
		p.NodeStrategy = Binpack
	}
	if p.GPUStrategy == "" {
		p.GPUStrategy = Binpack
	}
	if p.MultiGPU.GPUStrategy == "" {
		p.MultiGPU.GPUStrategy = p.GPUStrategy
	}
	setWeight(&p.Weights.Node, DefaultNodeWeight)
	setWeight(&p.Weights.GPU, DefaultGPUWeight)
	setWeight(&p.Weights.ProtectEmptyGPUs, DefaultProtectEmptyWeight)
	setWeight(&p.MultiGPU.Fragmentation, DefaultFragmentationWeight)
	setWeight(&p.CandidateNodes, DefaultCandidateNodes)
	if p.AllowPodOverride == nil {
		t := true
		p.AllowPodOverride = &t
	}
}

func setWeight(w **int32, v int32) {
	if *w == nil {
		*w = &v
	}
}

// Validate returns every problem of a defaulted policy at once.
func Validate(p *PlacementPolicy) field.ErrorList {
	var errs field.ErrorList
	if p.APIVersion != PolicyAPIVersion {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), p.APIVersion, "must be "+PolicyAPIVersion))
	}
	if p.Kind != PolicyKind {
		errs = append(errs, field.Invalid(field.NewPath("kind"), p.Kind, "must be "+PolicyKind))
	}
	errs = append(errs, validateStrategy(field.NewPath("nodeStrategy"), p.NodeStrategy)...)
	errs = append(errs, validateStrategy(field.NewPath("gpuStrategy"), p.GPUStrategy)...)
	errs = append(errs, validateStrategy(field.NewPath("multiGPU", "gpuStrategy"), p.MultiGPU.GPUStrategy)...)
	w := field.NewPath("weights")
	errs = append(errs, validateWeight(w.Child("node"), p.Weights.Node)...)
	errs = append(errs, validateWeight(w.Child("gpu"), p.Weights.GPU)...)
	errs = append(errs, validateWeight(w.Child("protectEmptyGPUs"), p.Weights.ProtectEmptyGPUs)...)
	errs = append(errs, validateWeight(field.NewPath("multiGPU", "fragmentation"), p.MultiGPU.Fragmentation)...)
	switch c := p.CandidateNodes; {
	case c == nil:
		errs = append(errs, field.Required(field.NewPath("candidateNodes"), "set by defaulting"))
	case *c < 0:
		errs = append(errs, field.Invalid(field.NewPath("candidateNodes"), *c, "must be 0 (every node that fits) or more"))
	}
	if p.Weights.Node != nil && p.Weights.GPU != nil && *p.Weights.Node == 0 && *p.Weights.GPU == 0 {
		errs = append(errs, field.Invalid(w, "node: 0, gpu: 0", "node and gpu weights cannot both be 0"))
	}
	return errs
}

func validateStrategy(path *field.Path, name string) field.ErrorList {
	if _, ok := Strategies[name]; !ok {
		return field.ErrorList{field.NotSupported(path, name, StrategyNames())}
	}
	return nil
}

func validateWeight(path *field.Path, w *int32) field.ErrorList {
	switch {
	case w == nil:
		return field.ErrorList{field.Required(path, "set by defaulting")}
	case *w < 0 || *w > MaxWeight:
		return field.ErrorList{field.Invalid(path, *w, fmt.Sprintf("must be between 0 and %d", MaxWeight))}
	}
	return nil
}

// ParsePolicy reads a PlacementPolicy document, defaults it and validates
// it. Unknown fields are errors, so a misspelt weight is not silently
// ignored.
func ParsePolicy(data []byte) (*PlacementPolicy, error) {
	p := &PlacementPolicy{}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		return nil, fmt.Errorf("placement policy: %w", err)
	}
	SetDefaults(p)
	if errs := Validate(p); len(errs) > 0 {
		return nil, fmt.Errorf("placement policy: %w", errs.ToAggregate())
	}
	return p, nil
}
