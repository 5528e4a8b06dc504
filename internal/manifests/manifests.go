// Package manifests knows where mlplane's kustomize configuration (config/)
// is and reads the objects it renders. Rendering itself is in
// internal/manifests/render, apart, because the kustomize library imports
// package plugin, which makes a binary resolve every C symbol at load and so
// cannot share a binary with go-nvml (the node agent, the local cluster).
package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Overlays are the kustomizations under config/ an admin applies; each must
// build and be accepted by an API server.
var Overlays = []string{"default", "overlays/self-signed", "overlays/prometheus"}

// Decode reads a multi-document YAML stream (the output of `kustomize
// build`) into objects, skipping empty documents. Errors name the decoding
// problem of the first bad document.
func Decode(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// ConfigDir finds config/ at the root of the module containing the working
// directory.
func ConfigDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "config"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Find returns the object of kind and name (and namespace, when not empty).
func Find(objs []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	i := slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool {
		return o.GetKind() == kind && o.GetName() == name && (namespace == "" || o.GetNamespace() == namespace)
	})
	if i < 0 {
		return nil
	}
	return objs[i]
}

// Into converts an object into a typed one (a Deployment, a Certificate).
func Into(obj *unstructured.Unstructured, into any) error {
	b, err := yaml.Marshal(obj.Object)
	if err != nil {
		return err
	}
	return yaml.UnmarshalStrict(b, into)
}
