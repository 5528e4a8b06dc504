package webhook

import (
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/mlplane/mlplane/internal/mutate"
)

// InjectOptions configure `webhook inject`.
type InjectOptions struct {
	// File is the input, "-" for standard input. Required.
	File string
	// ConfigFile is the InjectionConfig; default "" (the built-in config).
	ConfigFile string
	// NamespaceLabels are the labels every namespace is assumed to have,
	// "k=v,k2=v2". Default none.
	NamespaceLabels string
	// Namespace is the webhook's own namespace, never mutated. Default
	// api.DefaultNamespace.
	Namespace string
}

// Inject runs `webhook inject`: the mutation the webhook would apply, on
// multi-document YAML, offline. Warnings go to stderr.
func Inject(o InjectOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	if o.File == "" {
		return fmt.Errorf("-f is required: a YAML file, or - for standard input")
	}
	cfg := mutate.DefaultConfig()
	if o.ConfigFile != "" {
		data, err := os.ReadFile(o.ConfigFile)
		if err != nil {
			return err
		}
		if cfg, err = mutate.LoadConfig(data); err != nil {
			return fmt.Errorf("%s: %w", o.ConfigFile, err)
		}
	}
	m, err := mutate.New(cfg, mutate.Options{Namespace: o.Namespace})
	if err != nil {
		return err
	}
	labels, err := ParseLabels(o.NamespaceLabels)
	if err != nil {
		return err
	}
	in := stdin
	if o.File != "-" {
		f, err := os.Open(o.File)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	return m.Inject(in, stdout, func(string) map[string]string { return labels },
		func(w string) { fmt.Fprintf(stderr, "Warning: %s\n", w) })
}

// ParseLabels parses "k=v,k2=v2" (the --namespace-labels flag).
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("--namespace-labels: %q is not key=value", pair)
		}
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, fmt.Errorf("--namespace-labels: invalid key %q: %s", k, msgs[0])
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			return nil, fmt.Errorf("--namespace-labels: invalid value %q for %s: %s", v, k, msgs[0])
		}
		out[k] = v
	}
	return out, nil
}
