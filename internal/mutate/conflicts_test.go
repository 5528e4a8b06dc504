package mutate

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mlplane/mlplane/internal/api"
)

// budgetConfig has a template whose sidecar requests and limits cpu.
const budgetConfig = `apiVersion: mlplane.io/v1alpha1
kind: InjectionConfig
profiles:
- name: default
  requests: {cpu: 100m, memory: 256Mi, ephemeral-storage: 1Gi}
  limits: {cpu: "2", memory: 4Gi}
templates:
- name: metrics
  container:
    name: metrics-exporter
    image: ghcr.io/mlplane/metrics-exporter:v0.1.0
    ports: [{name: metrics, containerPort: 9400}]
    resources:
      requests: {cpu: "1"}
      limits: {cpu: "2"}
- name: probe
  native: true
  container:
    name: probe
    image: ghcr.io/mlplane/probe:v0.1.0
    ports: [{containerPort: 8081, hostPort: 18081}]
`

// TestPortConflicts: a port the added containers declare that a container
// running beside them declares too is denied, host networking included; a
// free one is not.
func TestPortConflicts(t *testing.T) {
	m := mutatorOf(t, []byte(budgetConfig))
	for _, tc := range []struct {
		name        string
		templates   string
		hostNetwork bool
		ports       []corev1.ContainerPort
		sidecar     bool // the user's port is on a native sidecar
		want        string
	}{
		{"same container port", "metrics", false, []corev1.ContainerPort{{ContainerPort: 9400}}, false,
			`annotation mlplane.io/templates: template "metrics": container "metrics-exporter" declares port 9400/TCP, which container "server" of the pod declares too: the containers of a pod share one network namespace, so only one of them can listen on it; change one of the ports`},
		{"same port on a user's native sidecar", "metrics", false, []corev1.ContainerPort{{ContainerPort: 9400, Protocol: corev1.ProtocolTCP}}, true,
			`annotation mlplane.io/templates: template "metrics": container "metrics-exporter" declares port 9400/TCP, which container "user-sidecar" of the pod declares too`},
		{"host network: the user's hostPort", "metrics", true, []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 9400}}, false,
			`annotation mlplane.io/templates: template "metrics": container "metrics-exporter" declares port 9400/TCP on the node's network (spec.hostNetwork), which container "server" of the pod declares too`},
		{"hostPort of a native sidecar", "probe", false, []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 18081}}, false,
			`annotation mlplane.io/templates: template "probe": container "probe" declares port 8081/TCP (hostPort :18081/TCP), which container "server" of the pod declares too`},
		{"other protocol", "metrics", false, []corev1.ContainerPort{{ContainerPort: 9400, Protocol: corev1.ProtocolUDP}}, false, ""},
		{"other port", "metrics,probe", true, []corev1.ContainerPort{{ContainerPort: 8000}}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(map[string]string{api.AnnotationTemplates: tc.templates})
			pod.Spec.HostNetwork = tc.hostNetwork
			if tc.sidecar {
				always := corev1.ContainerRestartPolicyAlways
				pod.Spec.InitContainers = []corev1.Container{{Name: "user-sidecar", Image: "img", RestartPolicy: &always, Ports: tc.ports}}
			} else {
				pod.Spec.Containers[0].Ports = tc.ports
			}
			_, err := m.Mutate(pod, enabled)
			checkError(t, err, tc.want)
		})
	}
}

// checkError fails unless err's message starts with want ("" for none).
func checkError(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("denied: %v", err)
	case want != "" && err == nil:
		t.Fatalf("not denied; want %s", want)
	case want != "" && (len(err.Error()) < len(want) || err.Error()[:len(want)] != want):
		t.Fatalf("error:\n%v\nwant prefix:\n%s", err, want)
	}
}

// TestPodLevelResources: the profile leaves the resources a pod budgets at
// pod level (spec.resources) to it, and what the InjectionConfig gives the
// added containers may not break that budget.
func TestPodLevelResources(t *testing.T) {
	m := mutatorOf(t, []byte(budgetConfig))
	pod := func(templates string, requests, limits corev1.ResourceList) *corev1.Pod {
		p := testPod(map[string]string{api.AnnotationTemplates: templates, api.AnnotationModelURI: "s3://bucket/m"})
		p.Spec.Resources = &corev1.ResourceRequirements{Requests: requests, Limits: limits}
		return p
	}
	t.Run("profile", func(t *testing.T) {
		out, _ := mutateApply(t, m, pod("", list("cpu", "4"), list("memory", "16Gi")))
		r := out.Spec.Containers[0].Resources
		if got := listString(r.Requests) + " / " + listString(r.Limits); got != "ephemeral-storage=1Gi / " {
			t.Errorf("server: requests / limits %s, want only the profile's ephemeral-storage request", got)
		}
	})
	for _, tc := range []struct {
		name             string
		templates        string
		requests, limits corev1.ResourceList
		want             string
	}{
		{"request above the pod's", "metrics", list("cpu", "900m"), nil,
			`the pod's spec.resources.requests[cpu] is 900m, less than the 1 its containers request once mlplane adds metrics-exporter, mlplane-model-loader (counted as the API server does: the regular containers and native sidecars together, or the largest init container); raise the pod's request or lower what the InjectionConfig (loader.resources, templates) asks for`},
		{"limit above the pod's", "metrics", list("cpu", "4"), list("cpu", "1"),
			`annotation mlplane.io/templates: template "metrics": container "metrics-exporter" has limits[cpu] 2, above the pod's spec.resources.limits[cpu] 1; raise the pod's limit or lower the container's in the InjectionConfig`},
		{"within the budget", "metrics", list("cpu", "4"), list("cpu", "4"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Mutate(pod(tc.templates, tc.requests, tc.limits), enabled)
			checkError(t, err, tc.want)
		})
	}
}

// TestNamespacePolicies: the containers mlplane adds get the namespace's
// LimitRange defaults, as the LimitRanger gives them to the pod's own, and
// are denied (or warned about, for a scoped quota) where a LimitRange or a
// ResourceQuota would refuse them.
func TestNamespacePolicies(t *testing.T) {
	m := testMutator(t)
	quota := func(scoped bool, hard ...string) corev1.ResourceQuota {
		q := corev1.ResourceQuota{Spec: corev1.ResourceQuotaSpec{Hard: list(hard...)}}
		q.Name = "compute"
		if scoped {
			q.Spec.Scopes = []corev1.ResourceQuotaScope{corev1.ResourceQuotaScopeNotTerminating}
		}
		return q
	}
	limitRange := func(item corev1.LimitRangeItem) corev1.LimitRange {
		item.Type = corev1.LimitTypeContainer
		lr := corev1.LimitRange{Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{item}}}
		lr.Name = "defaults"
		return lr
	}
	for _, tc := range []struct {
		name       string
		podLevel   bool
		quotas     []corev1.ResourceQuota
		lrs        []corev1.LimitRange
		want       string // the error
		warning    string
		loaderWant string // the loader's requests / limits
	}{
		{name: "quota counts limits.cpu, the profile has no cpu limit",
			quotas: []corev1.ResourceQuota{quota(false, "limits.cpu", "10", "requests.memory", "10Gi")},
			want:   `annotation mlplane.io/model-uri: the model loader: container "mlplane-model-loader" sets no limits.cpu, which ResourceQuota "compute" of namespace ml requires of every container (it counts limits.cpu); neither the InjectionConfig, the profile "gpu" nor a LimitRange of the namespace gives it one: set it in the profile or the InjectionConfig, or give the namespace a LimitRange default`},
		{name: "scoped quota: a warning",
			quotas:     []corev1.ResourceQuota{quota(true, "limits.cpu", "10")},
			warning:    `annotation mlplane.io/model-uri: the model loader: container "mlplane-model-loader" sets no limits.cpu, which ResourceQuota "compute" of namespace ml requires of every container (it counts limits.cpu); neither the InjectionConfig, the profile "gpu" nor a LimitRange of the namespace gives it one: set it in the profile or the InjectionConfig, or give the namespace a LimitRange default (if the quota's scopes select the pod)`,
			loaderWant: "cpu=500m ephemeral-storage=10Gi memory=1Gi / memory=2Gi"},
		{name: "a LimitRange default gives the limit",
			quotas:     []corev1.ResourceQuota{quota(false, "limits.cpu", "10")},
			lrs:        []corev1.LimitRange{limitRange(corev1.LimitRangeItem{Default: list("cpu", "1", "memory", "8Gi"), DefaultRequest: list("cpu", "200m")})},
			loaderWant: "cpu=500m ephemeral-storage=10Gi memory=1Gi / cpu=1 memory=2Gi"},
		{name: "pod-level resources lift the quota's rule", podLevel: true,
			quotas: []corev1.ResourceQuota{quota(false, "limits.cpu", "10")}},
		{name: "above a LimitRange's max",
			lrs:  []corev1.LimitRange{limitRange(corev1.LimitRangeItem{Max: list("memory", "1Gi"), Min: list("cpu", "1")})},
			want: `annotation mlplane.io/model-uri: the model loader: container "mlplane-model-loader" breaks LimitRange "defaults" of namespace ml: its minimum cpu per container is 1, but the request is 500m; its maximum memory per container is 1Gi, but the limit is 2Gi; change the container's resources in the InjectionConfig (or its profile), or the LimitRange`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(map[string]string{api.AnnotationModelURI: "s3://bucket/m", api.AnnotationProfile: "gpu"})
			if tc.podLevel {
				pod.Spec.Resources = &corev1.ResourceRequirements{Limits: list("cpu", "64")}
			}
			ns := enabled
			ns.ResourceQuotas, ns.LimitRanges = tc.quotas, tc.lrs
			res, err := m.Mutate(pod, ns)
			checkError(t, err, tc.want)
			if err != nil {
				return
			}
			if got := strings.Join(res.Warnings, "\n"); got != tc.warning {
				t.Errorf("warnings:\n%s\nwant:\n%s", got, tc.warning)
			}
			if tc.loaderWant == "" {
				return
			}
			out, err := Apply(pod, res.Patch)
			if err != nil {
				t.Fatal(err)
			}
			r := out.Spec.InitContainers[0].Resources
			if got := listString(r.Requests) + " / " + listString(r.Limits); got != tc.loaderWant {
				t.Errorf("loader: %s, want %s", got, tc.loaderWant)
			}
		})
	}
}
