package mutate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mlplane/mlplane/internal/api"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if errs := Validate(c); len(errs) > 0 {
		t.Fatalf("the built-in config is invalid: %v", errs)
	}
	if c.Loader.Image != DefaultLoaderImage || *c.SchedulerName != api.DefaultSchedulerName || c.DefaultProfile != DefaultProfileName ||
		c.Loader.OCIMode != OCIModeImageVolume || c.Loader.Cache != nil {
		t.Errorf("defaults: %+v", c)
	}
	if _, err := New(nil, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig([]byte("apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Loader.Image != DefaultLoaderImage || len(c.Loader.Args) != 2 || len(c.Profiles) != len(DefaultConfig().Profiles) {
		t.Errorf("a minimal file was not defaulted: %+v", c)
	}
	if *c.SchedulerName != api.DefaultSchedulerName {
		t.Errorf("schedulerName = %q", *c.SchedulerName)
	}

	// An explicit empty schedulerName leaves GPU pods' schedulerName alone.
	c, err = LoadConfig([]byte("apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\nschedulerName: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Mutate(testPod(map[string]string{api.AnnotationGPUMemory: "1Gi"}), enabled)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range res.Patch {
		if op.Path == "/spec/schedulerName" {
			t.Errorf("schedulerName set although the config says none")
		}
	}
}

// TestValidateEveryProblem: one load reports every problem of the file.
func TestValidateEveryProblem(t *testing.T) {
	_, err := LoadConfig([]byte(`
apiVersion: mlplane.io/v2
kind: Injection
loader:
  imagePullPolicy: Sometimes
  ociMode: Pull
  cache: {hostPath: cache, maxSize: "0"}
  resources:
    requests: {memory: 4Gi}
    limits: {memory: 1Gi}
schedulerName: Not_A_Name
excludedNamespaces: [UPPER]
defaultProfile: missing
profiles:
- name: small
  requests: {cpu: "2", nvidia.com/gpu: "1"}
  limits: {cpu: "1"}
- name: small
templates:
- name: metrics
  native: true
  container:
    name: ""
    restartPolicy: Always
    volumeMounts: [{name: nowhere, mountPath: /x}]
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`apiVersion: Unsupported value: "mlplane.io/v2"`,
		`kind: Unsupported value: "Injection"`,
		`loader.imagePullPolicy: Unsupported value: "Sometimes"`,
		`loader.resources.requests[memory]: Invalid value: "4Gi": must not be above the limit 1Gi`,
		`loader.ociMode: Unsupported value: "Pull": supported values: "ImageVolume", "Loader"`,
		`loader.cache.hostPath: Invalid value: "cache": must be an absolute path`,
		`loader.cache.maxSize: Invalid value: "0": must be positive`,
		`schedulerName: Invalid value: "Not_A_Name"`,
		`excludedNamespaces[0]: Invalid value: "UPPER"`,
		`defaultProfile: Unsupported value: "missing": supported values: "small"`,
		`profiles[0].requests[nvidia.com/gpu]: Unsupported value: "nvidia.com/gpu"`,
		`profiles[0].requests[cpu]: Invalid value: "2": must not be above the limit 1`,
		`profiles[1].name: Duplicate value: "small"`,
		`templates[0].container.name: Invalid value: ""`,
		`templates[0].container.image: Required value`,
		`templates[0].container.restartPolicy: Forbidden: set native: true to make a native sidecar`,
		`templates[0].container.volumeMounts[0].name: Not found: "nowhere"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

func TestLoadConfigStrict(t *testing.T) {
	_, err := LoadConfig([]byte("apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\nloader:\n  imag: typo\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "imag"`) {
		t.Fatalf("error = %v, want an unknown field error", err)
	}
}

// TestValidateCache: the cache's hostPath, each refusal with its message.
func TestValidateCache(t *testing.T) {
	for _, tc := range []struct{ cache, want string }{
		{"{}", `invalid InjectionConfig: loader.cache.hostPath: Required value: the cache directory on the node`},
		{"{hostPath: var/cache}", `invalid InjectionConfig: loader.cache.hostPath: Invalid value: "var/cache": must be an absolute path`},
		{"{hostPath: /var/cache/}", `invalid InjectionConfig: loader.cache.hostPath: Invalid value: "/var/cache/": must be a clean path (/var/cache)`},
		{"{hostPath: /var/../etc}", `invalid InjectionConfig: loader.cache.hostPath: Invalid value: "/var/../etc": must be a clean path (/etc)`},
		{"{hostPath: /}", `invalid InjectionConfig: loader.cache.hostPath: Invalid value: "/": must not be the node's root directory`},
		{"{hostPath: /cache, maxSize: -1Gi}", `invalid InjectionConfig: loader.cache.maxSize: Invalid value: "-1Gi": must be positive`},
		{"{hostPath: /var/lib/mlplane/cache, maxSize: 500Gi}", ""},
	} {
		_, err := LoadConfig([]byte("apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\nloader:\n  cache: " + tc.cache + "\n"))
		if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && got != tc.want {
			t.Errorf("cache %s: error\n %v\nwant\n %s", tc.cache, err, tc.want)
		}
	}
}
