package mutate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// ApplyJSON applies a patch from Mutate to a JSON document.
func ApplyJSON(doc []byte, ops []Op) ([]byte, error) {
	raw, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}

// Apply returns a copy of pod with the patch applied.
func Apply(pod *corev1.Pod, ops []Op) (*corev1.Pod, error) {
	doc, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	if doc, err = ApplyJSON(doc, ops); err != nil {
		return nil, err
	}
	out := &corev1.Pod{}
	return out, json.Unmarshal(doc, out)
}

// templatePaths says where each supported kind keeps its pod template; an
// empty path is the object itself (a Pod). Keys are "group/Kind".
var templatePaths = map[string][]string{
	"/Pod":                  nil,
	"apps/Deployment":       {"spec", "template"},
	"apps/StatefulSet":      {"spec", "template"},
	"apps/DaemonSet":        {"spec", "template"},
	"apps/ReplicaSet":       {"spec", "template"},
	"batch/Job":             {"spec", "template"},
	"batch/CronJob":         {"spec", "jobTemplate", "spec", "template"},
	"extensions/Deployment": {"spec", "template"},
}

// DefaultNamespaceName is the namespace Inject assumes for objects without
// metadata.namespace, as kubectl does.
const DefaultNamespaceName = "default"

// Inject reads multi-document YAML from r and writes it to w with every pod
// template mutated exactly as the webhook would mutate the pods created from
// it. Other kinds, and pods left alone, are written unchanged. labels gives
// the labels of a namespace; warn receives the admission warnings. A pod the
// webhook would deny stops the stream with the webhook's message.
func (m *Mutator) Inject(r io.Reader, w io.Writer, labels func(namespace string) map[string]string, warn func(string)) error {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	first := true
	for i := 0; ; i++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading document %d: %w", i+1, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		out, err := m.injectDocument(raw, labels, warn)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if out == nil {
			continue
		}
		if !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		first = false
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
}

func (m *Mutator) injectDocument(raw []byte, labels func(string) map[string]string, warn func(string)) ([]byte, error) {
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return raw, nil // not an object (a comment-only document, a list): pass through
	}
	kind, _ := obj["kind"].(string)
	gk := groupKind(obj)
	tpath, ok := templatePaths[gk]
	if !ok {
		return raw, nil
	}
	meta, _ := obj["metadata"].(map[string]any)
	namespace, _ := meta["namespace"].(string)
	if namespace == "" {
		namespace = DefaultNamespaceName
	}
	name, _ := meta["name"].(string)
	if name == "" {
		name, _ = meta["generateName"].(string)
	}
	id := fmt.Sprintf("%s %s/%s", kind, namespace, name)

	tmpl := obj
	for _, k := range tpath {
		next, ok := tmpl[k].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: %s has no %s", id, kind, strings.Join(tpath, "."))
		}
		tmpl = next
	}
	sub := map[string]any{"metadata": tmpl["metadata"], "spec": tmpl["spec"]}
	if sub["metadata"] == nil {
		sub["metadata"] = map[string]any{}
	}
	subJSON, err := json.Marshal(sub)
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(subJSON, pod); err != nil {
		return nil, fmt.Errorf("%s: decoding the pod template: %w", id, err)
	}
	pod.Namespace = namespace
	res, err := m.mutate(pod, Namespace{Name: namespace, Labels: labels(namespace)}, controllerVolumes(gk, obj))
	for _, w := range res.Warnings {
		warn(id + ": " + w)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	if len(res.Patch) == 0 {
		return raw, nil
	}
	patched, err := ApplyJSON(subJSON, res.Patch)
	if err != nil {
		return nil, fmt.Errorf("%s: applying the patch: %w", id, err)
	}
	dec = json.NewDecoder(bytes.NewReader(patched))
	dec.UseNumber()
	var newSub map[string]any
	if err := dec.Decode(&newSub); err != nil {
		return nil, err
	}
	tmpl["metadata"], tmpl["spec"] = newSub["metadata"], newSub["spec"]
	return yaml.Marshal(obj)
}

// groupKind is "group/Kind" of obj (a key of templatePaths).
func groupKind(obj map[string]any) string {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	group, _, ok := strings.Cut(apiVersion, "/")
	if !ok {
		group = ""
	}
	return group + "/" + kind
}

// TemplatePod returns the pod obj's controller creates from its pod
// template (obj itself for a Pod): the template's metadata and spec,
// decoded as the API server decodes (sigs.k8s.io/json, case-sensitive), in
// obj's namespace (DefaultNamespaceName if unset), with the volumes the
// controller adds (a StatefulSet's claim volumes first, named after each
// volumeClaimTemplate, replacing template volumes of those names, claims
// named for ordinal 0), and named as the controller names it
// (generateName "NAME-"; a Pod keeps its own); an Indexed Job's pod is
// that of index 0, with what the Job controller adds for it
// (addCompletionIndex). ok is false for a kind Inject
// does not mutate. Tests use it to create what the served webhook sees.
func TemplatePod(obj map[string]any) (pod *corev1.Pod, ok bool, err error) {
	tpath, ok := templatePaths[groupKind(obj)]
	if !ok {
		return nil, false, nil
	}
	tmpl := obj
	for _, k := range tpath {
		if tmpl, ok = tmpl[k].(map[string]any); !ok {
			return nil, true, fmt.Errorf("%v has no %s", obj["kind"], strings.Join(tpath, "."))
		}
	}
	j, err := json.Marshal(map[string]any{"metadata": tmpl["metadata"], "spec": tmpl["spec"]})
	if err != nil {
		return nil, true, err
	}
	pod = &corev1.Pod{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, pod); err != nil {
		return nil, true, err
	}
	meta, _ := obj["metadata"].(map[string]any)
	if pod.Namespace, _ = meta["namespace"].(string); pod.Namespace == "" {
		pod.Namespace = DefaultNamespaceName
	}
	if indexedJob(obj) {
		addCompletionIndex(pod)
	}
	if len(tpath) > 0 {
		name, _ := meta["name"].(string)
		pod.Name, pod.GenerateName = "", name+"-"
		if claims := controllerVolumes(groupKind(obj), obj); len(claims) > 0 {
			vols := make([]corev1.Volume, 0, len(claims)+len(pod.Spec.Volumes))
			for _, c := range claims {
				vols = append(vols, corev1.Volume{Name: c, VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c + "-" + name + "-0"}}})
			}
			for _, v := range pod.Spec.Volumes {
				if !slices.Contains(claims, v.Name) {
					vols = append(vols, v)
				}
			}
			pod.Spec.Volumes = vols
		}
	}
	return pod, true, nil
}

// indexedJob reports whether obj is a Job, or a CronJob's job template,
// with completionMode Indexed.
func indexedJob(obj map[string]any) bool {
	spec, _ := obj["spec"].(map[string]any)
	switch groupKind(obj) {
	case "batch/CronJob":
		jt, _ := spec["jobTemplate"].(map[string]any)
		spec, _ = jt["spec"].(map[string]any)
	case "batch/Job":
	default:
		return false
	}
	return spec["completionMode"] == string(batchv1.IndexedCompletion)
}

// addCompletionIndex gives pod what the Job controller gives the pod of
// index 0 of an Indexed Job (k8s.io/kubernetes pkg/controller/job,
// indexed_job_utils.go): the index as an annotation and a label, and to
// each container that lacks it JOB_COMPLETION_INDEX from that label,
// appended.
func addCompletionIndex(pod *corev1.Pod) {
	key := batchv1.JobCompletionIndexAnnotation
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Annotations[key], pod.Labels[key] = "0", "0"
	env := corev1.EnvVar{Name: completionIndexEnvName, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['" + key + "']"}}}
	for _, cs := range [2][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if !hasEnv(cs[i].Env, env.Name) {
				cs[i].Env = append(cs[i].Env, env)
			}
		}
	}
}

// controllerVolumes are the volumes a workload's controller adds to each
// pod it creates from the template: a StatefulSet's controller adds one per
// volumeClaimTemplate, named after it, and replaces a template volume of
// that name (k8s.io/kubernetes pkg/controller/statefulset, updateStorage).
// The served webhook sees them in the pod; offline they are reserved, so
// that the volumes mlplane adds to the template never take their names.
func controllerVolumes(kind string, obj map[string]any) []string {
	if kind != "apps/StatefulSet" {
		return nil
	}
	spec, _ := obj["spec"].(map[string]any)
	vcts, _ := spec["volumeClaimTemplates"].([]any)
	var names []string
	for _, v := range vcts {
		vct, _ := v.(map[string]any)
		meta, _ := vct["metadata"].(map[string]any)
		if name, _ := meta["name"].(string); name != "" {
			names = append(names, name)
		}
	}
	return names
}
