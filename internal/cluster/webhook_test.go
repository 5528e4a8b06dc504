package cluster

import (
	"path/filepath"

	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/mlplane/mlplane/internal/api"
)

// TestWebhookConfigurationSelectors checks which (namespace, pod) label
// combinations reach the webhook, and that none reaches it twice.
func TestWebhookConfigurationSelectors(t *testing.T) {
	cfgs := map[string]*admissionregistrationv1.MutatingWebhookConfiguration{
		"generated": WebhookConfiguration("https://127.0.0.1:1/mutate-pods", []byte("ca")),
	}
	if root, err := ModuleRoot(); err == nil {
		shipped, err := webhookRegistration(filepath.Join(root, shippedRegistration), "https://127.0.0.1:1/mutate-pods", []byte("ca"))
		if err != nil {
			t.Fatal(err)
		}
		cfgs["shipped"] = shipped
	}
	for name, cfg := range cfgs {
		t.Run(name, func(t *testing.T) { testSelectors(t, cfg) })
	}
}

func testSelectors(t *testing.T, cfg *admissionregistrationv1.MutatingWebhookConfiguration) {
	nsLabels := func(name string, l map[string]string) labels.Set {
		s := labels.Set{"kubernetes.io/metadata.name": name}
		for k, v := range l {
			s[k] = v
		}
		return s
	}
	enabled := map[string]string{api.LabelInject: api.NamespaceInjectEnabled}
	podIn := map[string]string{api.LabelInject: api.PodInjectTrue}
	podOut := map[string]string{api.LabelInject: api.PodInjectFalse}
	tests := []struct {
		name string
		ns   labels.Set
		pod  labels.Set
		want int // how many webhook entries match
	}{
		{"namespace opted in", nsLabels("ml", enabled), nil, 1},
		{"namespace opted in, pod opted in too", nsLabels("ml", enabled), podIn, 1},
		{"namespace opted in, pod opted out", nsLabels("ml", enabled), podOut, 0},
		{"plain namespace, plain pod", nsLabels("default", nil), nil, 0},
		{"plain namespace, pod opted in", nsLabels("default", nil), podIn, 1},
		{"kube-system labelled", nsLabels("kube-system", enabled), podIn, 0},
		{"mlplane-system, pod opted in", nsLabels(api.DefaultNamespace, nil), podIn, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := 0
			for _, w := range cfg.Webhooks {
				if matches(t, w.NamespaceSelector, tt.ns) && matches(t, w.ObjectSelector, tt.pod) {
					got++
				}
			}
			if got != tt.want {
				t.Errorf("%d webhook entries match, want %d", got, tt.want)
			}
		})
	}
	for _, w := range cfg.Webhooks {
		if *w.FailurePolicy != "Fail" || *w.SideEffects != "None" || *w.ReinvocationPolicy != "IfNeeded" || *w.ClientConfig.URL != "https://127.0.0.1:1/mutate-pods" {
			t.Errorf("webhook %s: policy/side effects/reinvocation/url = %s/%s/%s/%s", w.Name, *w.FailurePolicy, *w.SideEffects, *w.ReinvocationPolicy, *w.ClientConfig.URL)
		}
	}
}

func matches(t *testing.T, sel *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return s.Matches(set)
}

// TestShippedRegistration checks that the manifest users install selects
// the same pods as WebhookConfiguration, and that loading it points every
// entry at the local URL.
func TestShippedRegistration(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err) // the test runs inside the module: no root is a broken tree
	}
	reg, err := webhookRegistration(filepath.Join(root, shippedRegistration), "https://127.0.0.1:1/x", []byte("ca"))
	if err != nil {
		t.Fatal(err)
	}
	want := WebhookConfiguration("https://127.0.0.1:1/x", []byte("ca"))
	if len(reg.Webhooks) != len(want.Webhooks) {
		t.Fatalf("%d entries, want %d", len(reg.Webhooks), len(want.Webhooks))
	}
	for i, w := range reg.Webhooks {
		if w.ClientConfig.Service != nil || *w.ClientConfig.URL != "https://127.0.0.1:1/x" || string(w.ClientConfig.CABundle) != "ca" {
			t.Errorf("entry %s: clientConfig not replaced: %+v", w.Name, w.ClientConfig)
		}
		if w.Name != want.Webhooks[i].Name {
			t.Errorf("entry %d: name %q, want %q", i, w.Name, want.Webhooks[i].Name)
		}
	}
}
