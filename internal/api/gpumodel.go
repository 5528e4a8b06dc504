package api

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// MaxGPUModels bounds the entries of AnnotationGPUModel and
// AnnotationGPUModelAvoid, and maxGPUModelLen the length of one entry.
const (
	MaxGPUModels   = 16
	maxGPUModelLen = 64
)

// GPUModels is a pod's choice of GPU models, from AnnotationGPUModel (Use)
// and AnnotationGPUModelAvoid (Avoid). A GPU is allowed when Use is empty or
// one of its entries matches the GPU's model, and no entry of Avoid matches
// it: HAMi's use-gputype and nouse-gputype.
//
// An entry matches a model, the product name the node agent publishes
// (NVML's device name, such as "NVIDIA H100 80GB HBM3" or
// "NVIDIA A100-SXM4-80GB"), when the entry's words appear in the model's
// words one after another, ignoring case; words are the runs of letters and
// digits. So "H100", "h100 80gb" and "NVIDIA H100 80GB HBM3" match
// "NVIDIA H100 80GB HBM3", and "A100" matches "NVIDIA A100-SXM4-80GB".
// Unlike HAMi's substring test, "L4" does not match "NVIDIA L40S" and
// "H200" does not match "NVIDIA GH200 480GB".
type GPUModels struct {
	Use, Avoid []string
}

// Any reports whether the pod allows every model (neither list is set).
func (m GPUModels) Any() bool { return len(m.Use) == 0 && len(m.Avoid) == 0 }

// Allows reports whether a GPU of the given model may be used.
func (m GPUModels) Allows(model string) bool {
	if m.Any() {
		return true
	}
	words := modelWords(model)
	if len(m.Use) > 0 && !matchesAny(words, m.Use) {
		return false
	}
	return !matchesAny(words, m.Avoid)
}

// String describes the allowed models for a message, such as "of model H100
// or A100", "not of model L4" or "of model H100, not of model H100 NVL"; it
// is empty when Any.
func (m GPUModels) String() string {
	var parts []string
	if len(m.Use) > 0 {
		parts = append(parts, "of model "+strings.Join(m.Use, " or "))
	}
	if len(m.Avoid) > 0 {
		parts = append(parts, "not of model "+strings.Join(m.Avoid, " or "))
	}
	return strings.Join(parts, ", ")
}

// GPUModelMatches reports whether entry, one entry of AnnotationGPUModel or
// AnnotationGPUModelAvoid, matches model by the rule GPUModels describes.
func GPUModelMatches(model, entry string) bool {
	return wordsMatch(modelWords(model), modelWords(entry))
}

func matchesAny(words []string, entries []string) bool {
	for _, e := range entries {
		if wordsMatch(words, modelWords(e)) {
			return true
		}
	}
	return false
}

// wordsMatch reports whether want occurs in words as a contiguous run,
// ignoring case.
func wordsMatch(words, want []string) bool {
	if len(want) == 0 {
		return false
	}
outer:
	for i := 0; i+len(want) <= len(words); i++ {
		for j, w := range want {
			if !strings.EqualFold(words[i+j], w) {
				continue outer
			}
		}
		return true
	}
	return false
}

func modelWords(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// ParseGPUModels parses the value of AnnotationGPUModel or
// AnnotationGPUModelAvoid (key): a comma-separated list of at most
// MaxGPUModels entries, white space around the commas dropped, each of at
// most 64 letters, digits, spaces, '-', '_' and '.' with at least one letter
// or digit. The error names the annotation, the value, what is wrong and
// what is accepted.
func ParseGPUModels(key, v string) ([]string, error) {
	bad := func(why string) error {
		return fmt.Errorf("annotation %s: invalid value %q: %s; want a comma-separated list of at most %d GPU models such as \"H100,A100\" (letters, digits, spaces, '-', '_' and '.')", key, v, why, MaxGPUModels)
	}
	items := strings.Split(v, ",")
	if len(items) > MaxGPUModels {
		return nil, bad(fmt.Sprintf("%d models", len(items)))
	}
	out := make([]string, 0, len(items))
	for i, item := range items {
		item = strings.TrimSpace(item)
		switch {
		case item == "" && len(items) == 1:
			return nil, bad("no model")
		case item == "":
			return nil, bad(fmt.Sprintf("model %d is empty", i+1))
		case len(item) > maxGPUModelLen:
			return nil, bad(fmt.Sprintf("model %d is longer than %d characters", i+1, maxGPUModelLen))
		case strings.IndexFunc(item, func(r rune) bool {
			return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != ' ' && r != '-' && r != '_' && r != '.'
		}) >= 0:
			return nil, bad(fmt.Sprintf("model %d (%q) has a character other than letters, digits, spaces, '-', '_' and '.'", i+1, item))
		case len(modelWords(item)) == 0:
			return nil, bad(fmt.Sprintf("model %d (%q) has no letter or digit", i+1, item))
		}
		out = append(out, item)
	}
	return out, nil
}

// GPUModelsFromAnnotations reads a pod's GPUModels; every invalid annotation
// is reported, joined.
func GPUModelsFromAnnotations(ann map[string]string) (GPUModels, error) {
	var m GPUModels
	var errs []error
	if v, ok := ann[AnnotationGPUModel]; ok {
		use, err := ParseGPUModels(AnnotationGPUModel, v)
		errs = append(errs, err)
		m.Use = use
	}
	if v, ok := ann[AnnotationGPUModelAvoid]; ok {
		avoid, err := ParseGPUModels(AnnotationGPUModelAvoid, v)
		errs = append(errs, err)
		m.Avoid = avoid
	}
	if err := errors.Join(errs...); err != nil {
		return GPUModels{}, err
	}
	return m, nil
}
