// Package manifests renders mlplane's kustomize configuration (config/) with
// the kustomize library the kustomize command is built from, so unit tests
// can check what an admin would apply without bin/kustomize.
package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Overlays are the kustomizations under config/ an admin applies; each must
// build and be accepted by an API server.
var Overlays = []string{"default", "overlays/self-signed", "overlays/prometheus"}

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

// Build renders the kustomization in dir, as `kustomize build dir` does.
func Build(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return rm.AsYaml()
}

// Objects renders the kustomization in dir into objects.
func Objects(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
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
