package manifests

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/manifests/render"
)

// A grant is one atomic permission of a ServiceAccount:
// "SCOPE GROUP/RESOURCE[NAME] VERB", where SCOPE is "cluster" (a
// ClusterRoleBinding) or the namespace of a RoleBinding, and [NAME] appears
// only when the rule is limited to resourceNames. Roles this repository
// does not define (Kubernetes' built-in ones) appear as "SCOPE role:NAME".
func grant(scope, group, resource, name, verb string) string {
	if group == "" {
		group = "core"
	}
	if name != "" {
		resource += "[" + name + "]"
	}
	return fmt.Sprintf("%s %s/%s %s", scope, group, resource, verb)
}

// expected is every grant each component uses, and no more: a verb it does
// not use fails the test, and so does a verb it uses but lacks.
var expected = map[string]map[string][]string{
	"default": {
		"mlplane-webhook":    webhookGrants,
		"mlplane-scheduler":  schedulerGrants,
		"mlplane-node-agent": nodeAgentGrants,
		"mlplane-extender":   extenderGrants,
		// config/custom-metrics with its certmanager component
		"mlplane-metrics-apiserver": metricsAPIServerGrants,
	},
	"overlays/self-signed": {
		"mlplane-webhook": append(slices.Clone(webhookGrants),
			// Its own Secret, created once, then read and renewed.
			grant("mlplane-system", "", "secrets", "", "create"),
			grant("mlplane-system", "", "secrets", "mlplane-webhook-tls", "get"),
			grant("mlplane-system", "", "secrets", "mlplane-webhook-tls", "update"),
			// The extender's serving and client certificates, from its CA.
			grant("mlplane-system", "", "secrets", "mlplane-extender-tls", "get"),
			grant("mlplane-system", "", "secrets", "mlplane-extender-tls", "update"),
			grant("mlplane-system", "", "secrets", "mlplane-extender-client-tls", "get"),
			grant("mlplane-system", "", "secrets", "mlplane-extender-client-tls", "update"),
			// One writer at a time.
			grant("mlplane-system", "coordination.k8s.io", "leases", "", "create"),
			grant("mlplane-system", "coordination.k8s.io", "leases", "mlplane-webhook-certs", "get"),
			grant("mlplane-system", "coordination.k8s.io", "leases", "mlplane-webhook-certs", "update"),
			// The caBundle.
			grant("cluster", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "mlplane-webhook", "get"),
			grant("cluster", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "mlplane-webhook", "update"),
		),
		"mlplane-scheduler":  schedulerGrants,
		"mlplane-node-agent": nodeAgentGrants,
		"mlplane-extender":   extenderGrants,
	},
}

func init() {
	expected["overlays/prometheus"] = expected["default"]
	// The self-signed install plus config/custom-metrics with its
	// self-signed component.
	local := maps.Clone(expected["overlays/self-signed"])
	local["mlplane-metrics-apiserver"] = append(slices.Clone(metricsAPIServerGrants),
		// Its own Secret and Lease, as the webhook's.
		grant("mlplane-system", "", "secrets", "", "create"),
		grant("mlplane-system", "", "secrets", "mlplane-metrics-apiserver-tls", "get"),
		grant("mlplane-system", "", "secrets", "mlplane-metrics-apiserver-tls", "update"),
		grant("mlplane-system", "coordination.k8s.io", "leases", "", "create"),
		grant("mlplane-system", "coordination.k8s.io", "leases", "mlplane-metrics-apiserver-certs", "get"),
		grant("mlplane-system", "coordination.k8s.io", "leases", "mlplane-metrics-apiserver-certs", "update"),
		// The caBundle of both APIServices.
		grant("cluster", "apiregistration.k8s.io", "apiservices", "v1beta1.custom.metrics.k8s.io", "get"),
		grant("cluster", "apiregistration.k8s.io", "apiservices", "v1beta1.custom.metrics.k8s.io", "update"),
		grant("cluster", "apiregistration.k8s.io", "apiservices", "v1beta2.custom.metrics.k8s.io", "get"),
		grant("cluster", "apiregistration.k8s.io", "apiservices", "v1beta2.custom.metrics.k8s.io", "update"),
	)
	expected["overlays/local"] = local
}

// rbacOverlays are the overlays whose grants are checked: every overlay an
// admin applies, and the one the install test and make demo apply.
var rbacOverlays = append(slices.Clone(Overlays), "overlays/local")

// The custom metrics API server: informers on Nodes (the agents' metrics
// addresses) and Pod metadata (the HPA's label selectors, pod UIDs), and
// what every aggregated API server needs to delegate authentication and
// authorization.
var metricsAPIServerGrants = []string{
	grant("cluster", "", "nodes", "", "list"),
	grant("cluster", "", "nodes", "", "watch"),
	grant("cluster", "", "pods", "", "list"),
	grant("cluster", "", "pods", "", "watch"),
	"cluster role:system:auth-delegator",
	"kube-system role:extension-apiserver-authentication-reader",
}

var (
	// The webhook's namespace informer.
	webhookGrants = []string{
		grant("cluster", "", "namespaces", "", "get"),
		grant("cluster", "", "namespaces", "", "list"),
		grant("cluster", "", "namespaces", "", "watch"),
		// What the API server applies to the containers it adds.
		grant("cluster", "", "limitranges", "", "get"),
		grant("cluster", "", "limitranges", "", "list"),
		grant("cluster", "", "limitranges", "", "watch"),
		grant("cluster", "", "resourcequotas", "", "get"),
		grant("cluster", "", "resourcequotas", "", "list"),
		grant("cluster", "", "resourcequotas", "", "watch"),
	}
	// The upstream kube-scheduler: what the default scheduler has, plus its
	// own leader-election Lease.
	schedulerGrants = []string{
		"cluster role:system:kube-scheduler",
		"cluster role:system:volume-scheduler",
		"kube-system role:extension-apiserver-authentication-reader",
		grant("mlplane-system", "coordination.k8s.io", "leases", "", "create"),
		grant("mlplane-system", "coordination.k8s.io", "leases", "mlplane-scheduler", "get"),
		grant("mlplane-system", "coordination.k8s.io", "leases", "mlplane-scheduler", "update"),
	}
)

// The node agent: its own Node (informer, annotation patch, capacity on the
// status), its node's pods (names for the per-pod metric), its Lease.
var nodeAgentGrants = []string{
	grant("cluster", "", "nodes", "", "get"),
	grant("cluster", "", "nodes", "", "list"),
	grant("cluster", "", "nodes", "", "watch"),
	grant("cluster", "", "nodes", "", "patch"),
	grant("cluster", "", "nodes/status", "", "patch"),
	grant("cluster", "", "pods", "", "list"),
	grant("cluster", "", "events", "", "create"),
	grant("cluster", "", "namespaces", "", "get"),
	grant("cluster", "", "pods/eviction", "", "create"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "", "get"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "", "create"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "", "update"),
}

// The extender: informers on Nodes, Pods, PodDisruptionBudgets and the
// agents' Leases; the Binding (carrying the GPU assignment annotation) at
// bind time; evictions and events for preemption; leader election.
var extenderGrants = []string{
	grant("cluster", "", "nodes", "", "get"),
	grant("cluster", "", "nodes", "", "list"),
	grant("cluster", "", "nodes", "", "watch"),
	grant("cluster", "", "pods", "", "get"),
	grant("cluster", "", "pods", "", "list"),
	grant("cluster", "", "pods", "", "watch"),
	grant("cluster", "", "pods/binding", "", "create"),
	grant("cluster", "", "pods/eviction", "", "create"),
	grant("cluster", "policy", "poddisruptionbudgets", "", "list"),
	grant("cluster", "policy", "poddisruptionbudgets", "", "watch"),
	grant("cluster", "events.k8s.io", "events", "", "create"),
	grant("cluster", "events.k8s.io", "events", "", "patch"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "", "get"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "", "list"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "", "watch"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "", "create"),
	grant("mlplane-system", "coordination.k8s.io", "leases", "mlplane-extender", "update"),
	grant("mlplane-system", "", "pods", "", "patch"),
}

// builtinRoles are the Kubernetes roles a binding may name without this
// repository defining them; none of them reads Secrets.
var builtinRoles = sets.New("system:kube-scheduler", "system:volume-scheduler", "extension-apiserver-authentication-reader", "system:auth-delegator")

// grants computes every ServiceAccount's grants from the rendered Roles,
// ClusterRoles and their bindings.
func grants(t *testing.T, objs []*unstructured.Unstructured) map[string][]string {
	t.Helper()
	roles := map[string][]rbacv1.PolicyRule{} // "Kind ns/name"
	for _, o := range objs {
		switch o.GetKind() {
		case "Role", "ClusterRole":
			var r rbacv1.ClusterRole // Role has the same fields
			if err := Into(withKind(o, "ClusterRole"), &r); err != nil {
				t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
			}
			if r.AggregationRule != nil {
				t.Errorf("%s %s aggregates other roles; declare its rules instead", o.GetKind(), o.GetName())
			}
			roles[o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName()] = r.Rules
		}
	}
	out := map[string][]string{}
	for _, o := range objs {
		if o.GetKind() != "RoleBinding" && o.GetKind() != "ClusterRoleBinding" {
			continue
		}
		var b rbacv1.ClusterRoleBinding
		if err := Into(withKind(o, "ClusterRoleBinding"), &b); err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
		scope := "cluster"
		if o.GetKind() == "RoleBinding" {
			scope = o.GetNamespace()
		}
		key := b.RoleRef.Kind + " /" + b.RoleRef.Name
		if b.RoleRef.Kind == "Role" {
			key = "Role " + o.GetNamespace() + "/" + b.RoleRef.Name
		}
		rules, defined := roles[key]
		for _, s := range b.Subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				t.Errorf("%s %s binds %s %s: only mlplane's ServiceAccounts may be bound", o.GetKind(), o.GetName(), s.Kind, s.Name)
				continue
			}
			if s.Namespace != api.DefaultNamespace && s.Namespace != api.NodeAgentNamespace {
				t.Errorf("%s %s binds ServiceAccount %s/%s outside mlplane's namespaces", o.GetKind(), o.GetName(), s.Namespace, s.Name)
			}
			if !defined {
				if !builtinRoles.Has(b.RoleRef.Name) {
					t.Errorf("%s %s refers to %s, which is neither in config/ nor a known built-in role", o.GetKind(), o.GetName(), key)
				}
				out[s.Name] = append(out[s.Name], scope+" role:"+b.RoleRef.Name)
				continue
			}
			for _, r := range rules {
				if len(r.NonResourceURLs) > 0 {
					t.Errorf("%s grants non-resource URLs %v", key, r.NonResourceURLs)
				}
				names := r.ResourceNames
				if len(names) == 0 {
					names = []string{""}
				}
				for _, g := range r.APIGroups {
					for _, res := range r.Resources {
						for _, v := range r.Verbs {
							for _, n := range names {
								out[s.Name] = append(out[s.Name], grant(scope, g, res, n, v))
							}
						}
					}
				}
			}
		}
	}
	return out
}

func withKind(o *unstructured.Unstructured, kind string) *unstructured.Unstructured {
	c := o.DeepCopy()
	c.SetKind(kind)
	return c
}

func TestRBACLeastPrivilege(t *testing.T) {
	root, err := ConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, overlay := range rbacOverlays {
		t.Run(overlay, func(t *testing.T) {
			objs, err := render.Objects(filepath.Join(root, overlay))
			if err != nil {
				t.Fatal(err)
			}
			got := grants(t, objs)
			want, ok := expected[overlay]
			if !ok {
				t.Fatalf("no expected grants declared for overlay %s", overlay)
			}
			// Every ServiceAccount of the overlay has declared grants.
			for _, o := range objs {
				if o.GetKind() == "ServiceAccount" {
					if _, ok := want[o.GetName()]; !ok {
						t.Errorf("ServiceAccount %s has no expected grants in this test: declare the verbs it uses", o.GetName())
					}
				}
			}
			for _, e := range violations(want, got) {
				t.Error(e)
			}
		})
	}
}

// violations compares granted with wanted, per ServiceAccount: a
// cluster-wide Secret permission, a wildcard, a grant not used or a use not
// granted is a violation.
func violations(want, got map[string][]string) []string {
	var out []string
	for sa, g := range got {
		for _, x := range g {
			f := strings.Fields(x)
			if f[0] == "cluster" && strings.HasPrefix(f[1], "core/secrets") {
				out = append(out, fmt.Sprintf("%s can %s Secrets cluster-wide", sa, f[len(f)-1]))
			}
			if strings.Contains(x, "*") {
				out = append(out, fmt.Sprintf("%s has a wildcard grant: %s", sa, x))
			}
		}
		if d := cmp.Diff(sortedSet(want[sa]), sortedSet(g)); d != "" {
			out = append(out, fmt.Sprintf("ServiceAccount %s: grants differ from what it uses (-used +granted):\n%s", sa, d))
		}
	}
	for sa := range want {
		if _, ok := got[sa]; !ok {
			out = append(out, fmt.Sprintf("ServiceAccount %s is granted nothing; it needs %v", sa, want[sa]))
		}
	}
	sort.Strings(out)
	return out
}

func sortedSet(s []string) []string {
	out := sets.List(sets.New(s...))
	sort.Strings(out)
	return out
}

// The rules this test applies catch what they should: a cluster-wide
// Secret read, a wildcard, an unused verb.
func TestGrantsDetectsViolations(t *testing.T) {
	role := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
		"metadata": map[string]any{"name": "r"},
		"rules":    []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"secrets"}, "verbs": []any{"get", "*"}}},
	}}
	binding := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": "b"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "sa", "namespace": "mlplane-system"}},
	}}
	got := grants(t, []*unstructured.Unstructured{role, binding})
	if d := cmp.Diff([]string{"cluster core/secrets *", "cluster core/secrets get"}, sortedSet(got["sa"])); d != "" {
		t.Fatalf("grants (-want +got):\n%s", d)
	}
	v := strings.Join(violations(map[string][]string{"sa": {"cluster core/secrets get"}, "other": {"x"}}, got), "\n")
	for _, want := range []string{
		"sa can get Secrets cluster-wide",
		"sa has a wildcard grant: cluster core/secrets *",
		"ServiceAccount sa: grants differ",
		"ServiceAccount other is granted nothing",
	} {
		if !strings.Contains(v, want) {
			t.Errorf("violations miss %q; got:\n%s", want, v)
		}
	}
}
