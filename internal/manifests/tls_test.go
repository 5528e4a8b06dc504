package manifests

import (
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
	"github.com/mlplane/mlplane/internal/manifests/render"
)

// rendered is what config/<overlay> renders.
func rendered(t *testing.T, overlay string) []*unstructured.Unstructured {
	t.Helper()
	root, err := ConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := render.Objects(filepath.Join(root, overlay))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// typed finds kind mlplane-system/name in objs and converts it into out.
func typed(t *testing.T, objs []*unstructured.Unstructured, kind, name string, out any) {
	t.Helper()
	o := Find(objs, kind, api.DefaultNamespace, name)
	if o == nil {
		t.Fatalf("no %s %s/%s", kind, api.DefaultNamespace, name)
	}
	if err := Into(o, out); err != nil {
		t.Fatal(err)
	}
}

func deployment(t *testing.T, overlay, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	typed(t, rendered(t, overlay), "Deployment", name, &d)
	return &d
}

// TestExtenderServesTLS: the extender serves its verbs from the Secret the
// certificates are issued into, on the port its Service and the scheduler
// configuration name, in every overlay.
func TestExtenderServesTLS(t *testing.T) {
	for _, overlay := range Overlays {
		d := deployment(t, overlay, "mlplane-extender")
		c := d.Spec.Template.Spec.Containers[0]
		if !slices.Contains(c.Args, "--cert-dir=/tls") || !slices.Contains(c.Args, "--addr=:8888") {
			t.Errorf("%s: extender args %v lack --cert-dir=/tls and --addr=:8888", overlay, c.Args)
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.MountPath == "/tls" && slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
				return v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == certs.ExtenderSecretName
			})
		}) {
			t.Errorf("%s: the extender does not mount Secret %s at /tls", overlay, certs.ExtenderSecretName)
		}
		if !slices.Contains(c.Ports, corev1.ContainerPort{Name: "https", ContainerPort: 8888, Protocol: corev1.ProtocolTCP}) &&
			!slices.Contains(c.Ports, corev1.ContainerPort{Name: "https", ContainerPort: 8888}) {
			t.Errorf("%s: extender ports %v lack https 8888", overlay, c.Ports)
		}
		var svc corev1.Service
		typed(t, rendered(t, overlay), "Service", certs.ExtenderServiceName, &svc)
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 8888 && p.TargetPort == intstr.FromString("https") }) {
			t.Errorf("%s: Service ports %v: want 8888 to the https port", overlay, svc.Spec.Ports)
		}
	}
}

// TestNetworkPolicy: the extender's NetworkPolicy selects the extender's
// pods and nothing else of mlplane, admits the mlplane-scheduler's pods
// (and no other pod of mlplane) to the verbs' port, and anyone to
// /metrics. Whether it is enforced is up to the cluster's network plugin;
// the e2e config test checks that the API server accepts it.
func TestNetworkPolicy(t *testing.T) {
	objs := rendered(t, "default")
	var np networkingv1.NetworkPolicy
	typed(t, objs, "NetworkPolicy", "mlplane-extender", &np)
	templates := map[string]labels.Set{}
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			var d appsv1.Deployment
			if err := Into(o, &d); err != nil {
				t.Fatal(err)
			}
			templates[d.Name] = d.Spec.Template.Labels
		case "DaemonSet":
			var ds appsv1.DaemonSet
			if err := Into(o, &ds); err != nil {
				t.Fatal(err)
			}
			templates[ds.Name] = ds.Spec.Template.Labels
		}
	}
	selects := func(sel *metav1.LabelSelector) []string {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for name, l := range templates {
			if s.Matches(l) {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out
	}
	if got := selects(&np.Spec.PodSelector); !slices.Equal(got, []string{"mlplane-extender"}) {
		t.Errorf("podSelector selects %v, want [mlplane-extender]", got)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) != 2 {
		t.Fatalf("policy types %v, %d ingress rules: want Ingress, 2 rules", np.Spec.PolicyTypes, len(np.Spec.Ingress))
	}
	verbs, metrics := np.Spec.Ingress[0], np.Spec.Ingress[1]
	if len(verbs.From) != 1 || verbs.From[0].NamespaceSelector != nil || verbs.From[0].IPBlock != nil {
		t.Fatalf("verbs rule from %+v: want one podSelector of this namespace", verbs.From)
	}
	if got := selects(verbs.From[0].PodSelector); !slices.Equal(got, []string{"mlplane-scheduler"}) {
		t.Errorf("the verbs' port admits %v, want [mlplane-scheduler]", got)
	}
	port := func(r networkingv1.NetworkPolicyIngressRule) string {
		if len(r.Ports) != 1 || r.Ports[0].Port == nil {
			t.Fatalf("rule ports %+v: want one", r.Ports)
		}
		return r.Ports[0].Port.String()
	}
	c := deployment(t, "default", "mlplane-extender").Spec.Template.Spec.Containers[0]
	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	if p := port(verbs); named[p] != 8888 {
		t.Errorf("the verbs rule opens port %q (%d), want the verbs' 8888", p, named[p])
	}
	if p := port(metrics); len(metrics.From) != 0 || named[p] != 8080 {
		t.Errorf("the second rule opens port %q (%d) from %v, want /metrics (8080) from anywhere", p, named[p], metrics.From)
	}
}
