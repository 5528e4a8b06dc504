package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGPUModelMatches(t *testing.T) {
	for _, tc := range []struct {
		model, entry string
		want         bool
	}{
		{"NVIDIA H100 80GB HBM3", "H100", true},
		{"NVIDIA H100 80GB HBM3", "h100", true},
		{"NVIDIA H100 80GB HBM3", "H100 80GB", true},
		{"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", true},
		{"NVIDIA H100 80GB HBM3", "80GB H100", false}, // words in order
		{"NVIDIA H100 NVL", "H100 80GB", false},
		{"NVIDIA A100-SXM4-80GB", "A100", true},      // '-' separates words
		{"NVIDIA A100-SXM4-80GB", "a100-sxm4", true}, // and is one in the entry too
		{"NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB", true},
		{"NVIDIA L40S", "L4", false}, // a word, not a substring (HAMi would match)
		{"NVIDIA L4", "L4", true},
		{"NVIDIA GH200 480GB", "H200", false},
		{"NVIDIA GeForce RTX 4090", "RTX 4090", true},
		{"Fake GPU 80Gi", "fake gpu", true},
		{"", "H100", false},
		{"NVIDIA H100", "", false},
	} {
		if got := GPUModelMatches(tc.model, tc.entry); got != tc.want {
			t.Errorf("GPUModelMatches(%q, %q) = %v, want %v", tc.model, tc.entry, got, tc.want)
		}
	}
}

func TestGPUModelsAllows(t *testing.T) {
	h100, l4, a100 := "NVIDIA H100 80GB HBM3", "NVIDIA L4", "NVIDIA A100-SXM4-80GB"
	for _, tc := range []struct {
		name   string
		m      GPUModels
		allows []string
		denies []string
		desc   string
	}{
		{"any", GPUModels{}, []string{h100, l4, a100}, nil, ""},
		{"use", GPUModels{Use: []string{"H100", "A100"}}, []string{h100, a100}, []string{l4}, "of model H100 or A100"},
		{"avoid", GPUModels{Avoid: []string{"L4"}}, []string{h100, a100}, []string{l4}, "not of model L4"},
		// both: in Use and not in Avoid
		{"use and avoid", GPUModels{Use: []string{"NVIDIA"}, Avoid: []string{"A100"}}, []string{h100, l4}, []string{a100}, "of model NVIDIA, not of model A100"},
	} {
		for _, m := range tc.allows {
			if !tc.m.Allows(m) {
				t.Errorf("%s: %q not allowed", tc.name, m)
			}
		}
		for _, m := range tc.denies {
			if tc.m.Allows(m) {
				t.Errorf("%s: %q allowed", tc.name, m)
			}
		}
		if got := tc.m.String(); got != tc.desc {
			t.Errorf("%s: String() = %q, want %q", tc.name, got, tc.desc)
		}
	}
}

func TestGPUModelsFromAnnotations(t *testing.T) {
	const want = `; want a comma-separated list of at most 16 GPU models such as "H100,A100" (letters, digits, spaces, '-', '_' and '.')`
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		want    GPUModels
		wantErr string
	}{
		{name: "none", ann: map[string]string{}},
		{name: "lists, space around commas dropped", ann: map[string]string{AnnotationGPUModel: " H100 , A100-SXM4 ", AnnotationGPUModelAvoid: "L4"},
			want: GPUModels{Use: []string{"H100", "A100-SXM4"}, Avoid: []string{"L4"}}},
		{name: "empty", ann: map[string]string{AnnotationGPUModel: ""},
			wantErr: `annotation mlplane.io/gpu-model: invalid value "": no model` + want},
		{name: "empty entry", ann: map[string]string{AnnotationGPUModel: "H100,"},
			wantErr: `annotation mlplane.io/gpu-model: invalid value "H100,": model 2 is empty` + want},
		{name: "no word", ann: map[string]string{AnnotationGPUModelAvoid: "--"},
			wantErr: `annotation mlplane.io/gpu-model-avoid: invalid value "--": model 1 ("--") has no letter or digit` + want},
		{name: "bad character", ann: map[string]string{AnnotationGPUModel: "H100*"},
			wantErr: `annotation mlplane.io/gpu-model: invalid value "H100*": model 1 ("H100*") has a character other than letters, digits, spaces, '-', '_' and '.'` + want},
		{name: "too long", ann: map[string]string{AnnotationGPUModel: strings.Repeat("A", 65)},
			wantErr: `annotation mlplane.io/gpu-model: invalid value "` + strings.Repeat("A", 65) + `": model 1 is longer than 64 characters` + want},
		{name: "too many", ann: map[string]string{AnnotationGPUModel: strings.Repeat("A,", 16) + "A"},
			wantErr: `annotation mlplane.io/gpu-model: invalid value "` + strings.Repeat("A,", 16) + `A": 17 models` + want},
		// both annotations wrong: both reported
		{name: "both bad", ann: map[string]string{AnnotationGPUModel: ",", AnnotationGPUModelAvoid: "x!"},
			wantErr: `annotation mlplane.io/gpu-model: invalid value ",": model 1 is empty` + want + "\n" +
				`annotation mlplane.io/gpu-model-avoid: invalid value "x!": model 1 ("x!") has a character other than letters, digits, spaces, '-', '_' and '.'` + want},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GPUModelsFromAnnotations(tc.ann)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tc.wantErr {
				t.Fatalf("error = %q\nwant    %q", gotErr, tc.wantErr)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
