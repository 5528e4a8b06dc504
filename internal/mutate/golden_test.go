package mutate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	psaapi "k8s.io/pod-security-admission/api"

	"github.com/mlplane/mlplane/internal/api"
)

var update = flag.Bool("update", false, "rewrite the golden files testdata/<case>.injected.yaml")

// testNamespaces are the namespaces the golden cases live in.
var testNamespaces = map[string]map[string]string{
	"ml":    {api.LabelInject: api.NamespaceInjectEnabled},
	"plain": {"team": "search"},
	"ml-restricted": {api.LabelInject: api.NamespaceInjectEnabled,
		psaapi.EnforceLevelLabel: string(psaapi.LevelRestricted)},
}

func testLabels(ns string) map[string]string { return testNamespaces[ns] }

func testMutator(t testing.TB) *Mutator {
	t.Helper()
	return configMutator(t, "testdata/config.yaml")
}

// caseMutator is the Mutator of golden case name: testdata/<name>.config.yaml
// when the case has its own config, else testdata/config.yaml.
func caseMutator(t testing.TB, name string) *Mutator {
	t.Helper()
	file := filepath.Join("testdata", name+".config.yaml")
	if _, err := os.Stat(file); err != nil {
		return testMutator(t)
	}
	return configMutator(t, file)
}

func configMutator(t testing.TB, file string) *Mutator {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return mutatorOf(t, data)
}

// mutatorOf is the Mutator of an InjectionConfig file's content.
func mutatorOf(t testing.TB, config []byte) *Mutator {
	t.Helper()
	cfg, err := LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// goldenCases are testdata/<case>.yaml, without the configs.
func goldenCases(t *testing.T) []string {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cases []string
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if name == "config" || strings.HasSuffix(name, ".injected") || strings.HasSuffix(name, ".config") {
			continue
		}
		cases = append(cases, name)
	}
	if len(cases) < 10 {
		t.Fatalf("found only %d golden cases", len(cases))
	}
	return cases
}

// inject runs Inject and returns its output and warnings.
func inject(t *testing.T, m *Mutator, in []byte) (string, []string) {
	t.Helper()
	var out bytes.Buffer
	var warnings []string
	if err := m.Inject(bytes.NewReader(in), &out, testLabels, func(w string) { warnings = append(warnings, w) }); err != nil {
		t.Fatal(err)
	}
	return out.String(), warnings
}

// TestGolden mutates testdata/<case>.yaml, with testdata/<case>.config.yaml
// where there is one, and compares with testdata/<case>.injected.yaml, whose
// leading comments are the warnings. Run with -update to rewrite the golden
// files, then review their diff. Every pod of the output must also pass
// checkPod.
func TestGolden(t *testing.T) {
	for _, name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			m := caseMutator(t, name)
			in, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			out, warnings := inject(t, m, in)
			var got strings.Builder
			for _, w := range warnings {
				got.WriteString("# Warning: " + w + "\n")
			}
			got.WriteString(out)
			golden := filepath.Join("testdata", name+".injected.yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update)", err)
			}
			if d := cmp.Diff(string(want), got.String()); d != "" {
				t.Errorf("%s (-want +got):\n%s", golden, d)
			}
			for _, p := range readPods(t, []byte(out)) {
				checkPod(t, p)
			}
		})
	}
}

// TestIdempotent checks mutate(mutate(x)) == mutate(x) over every golden case.
func TestIdempotent(t *testing.T) {
	for _, name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			m := caseMutator(t, name)
			in, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			once, _ := inject(t, m, in)
			twice, _ := inject(t, m, []byte(once))
			if d := cmp.Diff(once, twice); d != "" {
				t.Errorf("second mutation changed the output (-once +twice):\n%s", d)
			}
		})
	}
}
