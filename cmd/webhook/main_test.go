package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	batchv1 "k8s.io/api/batch/v1"

	"github.com/mlplane/mlplane/internal/api"
)

const cronJob = `apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            mlplane.io/model-uri: s3://models/e5
            mlplane.io/model-secret: s3-creds
        spec:
          restartPolicy: OnFailure
          containers:
          - name: embed
            image: embed:1
---
apiVersion: v1
kind: Service
metadata:
  name: untouched
spec:
  ports:
  - port: 80
`

func TestInjectCronJobFromStdin(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run([]string{"inject", "-f", "-", "--namespace-labels", "mlplane.io/inject=enabled,team=ml"}, strings.NewReader(cronJob), &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(out.String(), "---\n")
	if len(docs) != 2 {
		t.Fatalf("%d documents:\n%s", len(docs), out.String())
	}
	var cj batchv1.CronJob
	if err := yaml.Unmarshal([]byte(docs[0]), &cj); err != nil {
		t.Fatal(err)
	}
	spec := cj.Spec.JobTemplate.Spec.Template.Spec
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "mlplane-model-loader" ||
		spec.InitContainers[0].EnvFrom[0].SecretRef.Name != "s3-creds" {
		t.Errorf("init containers %+v", spec.InitContainers)
	}
	if _, ok := cj.Spec.JobTemplate.Spec.Template.Annotations[api.AnnotationStatus]; !ok {
		t.Error("no status annotation")
	}
	if !strings.Contains(docs[1], "name: untouched") || strings.Contains(docs[1], "mlplane") {
		t.Errorf("the Service changed:\n%s", docs[1])
	}
	if !strings.Contains(errOut.String(), `Warning: CronJob default/nightly: annotation mlplane.io/model-secret: the webhook does not check that Secret "s3-creds" exists in namespace default`) {
		t.Errorf("stderr %q", errOut.String())
	}
}

func TestInjectDenied(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pod.yaml")
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ml, labels: {mlplane.io/inject: \"true\"}, annotations: {mlplane.io/gpu-count: \"0\", mlplane.io/gpu-memory: 1Gi}}\nspec: {containers: [{name: c, image: i}]}\n"
	if err := os.WriteFile(f, []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run([]string{"inject", "-f", f}, nil, &out, &errOut)
	want := `document 1: Pod ml/p: annotation mlplane.io/gpu-count: invalid value "0": want a whole number from 1 to 64`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
}

func TestInjectConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\nloader: {image: registry.local/loader:2}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	in := strings.NewReader("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {mlplane.io/inject: \"true\"}, annotations: {mlplane.io/model-uri: hf://a/b}}\nspec: {containers: [{name: c, image: i}]}\n")
	if err := run([]string{"inject", "-f", "-", "--config", cfg}, in, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "image: registry.local/loader:2") {
		t.Errorf("the config's loader image is not used:\n%s", out.String())
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: mlplane.io/v1alpha1\nkind: InjectionConfig\ndefaultProfile: nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"inject", "-f", "-", "--config", bad}, strings.NewReader(""), &out, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `defaultProfile: Unsupported value: "nope"`) {
		t.Fatalf("error %v", err)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inject"}, "-f is required"},
		{[]string{"inject", "-f", "-", "--namespace-labels", "novalue"}, `--namespace-labels: "novalue" is not key=value`},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"serve", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"serve", "--kubeconfig", "/nonexistent/kubeconfig"}, "connecting to the API server"},
	} {
		err := run(tc.args, strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
}
