package mutate

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// Pod Security (issue 14 kind 3). The rule: whenever the user's pod passes a
// Pod Security level, the mutated pod passes the same level, or the webhook
// says why not. The levels are judged by the Pod Security admission
// plugin's own checks (k8s.io/pod-security-admission/policy), at the
// version the API server runs ("latest" of the vendored library).
//
// What mlplane adds is made to fit where it can: at "restricted", every
// injected container gets the securityContext fields that level requires
// and neither it nor the pod sets (see restrictedContext). What cannot be
// made to fit (a template that asks for privileged or extra capabilities,
// the node cache's hostPath volume) is denied when the namespace enforces
// a level the pod passes but the mutated pod would not: the API server's
// Pod Security admission would reject it anyway, with a message that does
// not say mlplane caused it. Elsewhere (no enforce label, or a less strict
// one) the pod is admitted with a warning: the cluster lets it run, and a
// privileged sidecar or the node cache is what the admin configured.

// podSecurityChecks evaluates pods against the Pod Security levels; built
// once from the library's default checks, immutable.
var podSecurityChecks = newEvaluator(policy.DefaultChecks())

// The default checks in three parts, so that PodSecurityLevel runs each
// check once and answers as podSecurityChecks would: the restricted-level
// checks; the baseline checks one of them overrides at the latest version
// (its stricter form, which may also exempt a pod the baseline form does
// not: capabilities and seccomp exempt Windows pods at restricted); and the
// other baseline checks. A pod passes baseline when it passes both baseline
// parts, and restricted when it passes the restricted checks and the
// baseline checks not overridden, as the library's evaluator composes them
// (k8s.io/pod-security-admission/policy, registry.go).
var sharedBaselineChecks, overriddenBaselineChecks, restrictedOnlyChecks = func() (policy.Evaluator, policy.Evaluator, policy.Evaluator) {
	all := policy.DefaultChecks()
	overridden := map[policy.CheckID]bool{}
	for _, c := range all {
		if c.Level == psaapi.LevelRestricted {
			for _, id := range c.Versions[len(c.Versions)-1].OverrideCheckIDs {
				overridden[id] = true
			}
		}
	}
	var shared, over, restricted []policy.Check
	for _, c := range all {
		switch {
		case c.Level == psaapi.LevelRestricted:
			restricted = append(restricted, c)
		case overridden[c.ID]:
			over = append(over, c)
		default:
			shared = append(shared, c)
		}
	}
	return newEvaluator(shared), newEvaluator(over), newEvaluator(restricted)
}()

func newEvaluator(checks []policy.Check) policy.Evaluator {
	e, err := policy.NewEvaluator(checks, nil)
	if err != nil { // the library's own checks are valid
		panic(err)
	}
	return e
}

// latest is the Pod Security version the user's pod is judged at.
var latest = psaapi.LatestVersion()

// PodSecurityLevel returns the strictest Pod Security level (restricted,
// baseline or privileged) that a pod with meta and spec passes at the
// latest policy version.
func PodSecurityLevel(meta *metav1.ObjectMeta, spec *corev1.PodSpec) psaapi.Level {
	baseline := psaapi.LevelVersion{Level: psaapi.LevelBaseline, Version: latest}
	switch {
	case !allowed(sharedBaselineChecks.EvaluatePod(baseline, meta, spec)):
		return psaapi.LevelPrivileged
	case allowed(restrictedOnlyChecks.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: latest}, meta, spec)):
		return psaapi.LevelRestricted
	case allowed(overriddenBaselineChecks.EvaluatePod(baseline, meta, spec)):
		return psaapi.LevelBaseline
	}
	return psaapi.LevelPrivileged
}

func allowed(results []policy.CheckResult) bool {
	for _, r := range results {
		if !r.Allowed {
			return false
		}
	}
	return true
}

// passes reports whether the pod passes level lv.
func passes(lv psaapi.LevelVersion, meta *metav1.ObjectMeta, spec *corev1.PodSpec) bool {
	return allowed(podSecurityChecks.EvaluatePod(lv, meta, spec))
}

// isWindows reports whether the pod says it runs on Windows (spec.os.name).
func isWindows(spec *corev1.PodSpec) bool {
	return spec.OS != nil && spec.OS.Name == corev1.Windows
}

// restrictedContext returns sc, or a copy of it with the fields Pod
// Security's restricted level requires of a container of pod spec that
// neither sc nor the pod's securityContext sets: allowPrivilegeEscalation
// false, capabilities drop ALL, runAsNonRoot true and seccompProfile
// RuntimeDefault; on a Windows pod only runAsNonRoot (the others are
// Linux-only fields, which the level does not ask of Windows pods). Values
// sc sets are kept: one that breaks the level is reported by the check.
func restrictedContext(spec *corev1.PodSpec, sc *corev1.SecurityContext) *corev1.SecurityContext {
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	var out *corev1.SecurityContext
	edit := func() *corev1.SecurityContext {
		if out == nil {
			if out = sc.DeepCopy(); out == nil {
				out = &corev1.SecurityContext{}
			}
		}
		return out
	}
	has := func(f func(*corev1.SecurityContext) bool) bool { return sc != nil && f(sc) }
	userNamespace := spec.HostUsers != nil && !*spec.HostUsers // the level allows root in a user namespace
	if !userNamespace && (psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot) &&
		!has(func(s *corev1.SecurityContext) bool { return s.RunAsNonRoot != nil }) {
		edit().RunAsNonRoot = new(true)
	}
	if isWindows(spec) {
		return nonNil(out, sc)
	}
	if !has(func(s *corev1.SecurityContext) bool { return s.AllowPrivilegeEscalation != nil }) {
		edit().AllowPrivilegeEscalation = new(false)
	}
	if !has(func(s *corev1.SecurityContext) bool {
		return s.Capabilities != nil && slices.Contains(s.Capabilities.Drop, "ALL")
	}) {
		c := edit()
		if c.Capabilities == nil {
			c.Capabilities = &corev1.Capabilities{}
		}
		c.Capabilities.Drop = append(c.Capabilities.Drop, "ALL")
	}
	if psc.SeccompProfile == nil && !has(func(s *corev1.SecurityContext) bool { return s.SeccompProfile != nil }) {
		edit().SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	return nonNil(out, sc)
}

// nonNil returns the first of a and b that is not nil.
func nonNil[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// podSecurity fits the injected containers (inits go before the pod's init
// containers, containers after its containers) and volumes to the
// strictest Pod Security level the pod passes, and judges the result: an
// error denies the pod (the namespace's enforce label, in labels, names a
// level the pod passes and the mutated pod would not), a failure anywhere
// else is a warning.
func (b *builder) podSecurity(inits, containers []*corev1.Container, vols []*corev1.Volume, ns Namespace) error {
	if len(inits)+len(containers)+len(vols) == 0 {
		return nil
	}
	meta, spec := &b.pod.ObjectMeta, &b.pod.Spec
	level := PodSecurityLevel(meta, spec)
	if level == psaapi.LevelPrivileged {
		return nil
	}
	if level == psaapi.LevelRestricted {
		for _, cs := range [...][]*corev1.Container{inits, containers} {
			for _, c := range cs {
				c.SecurityContext = restrictedContext(spec, c.SecurityContext)
			}
		}
	}
	// The checks are conjunctions over the pod's own fields and over each
	// container and volume, so when the pod passes a level, the mutated pod
	// passes it exactly when a pod of the same pod-level fields with only
	// what mlplane adds does; that pod is what is judged (fewer containers
	// to check, and a message that names only what mlplane adds).
	added := *spec
	added.InitContainers, added.Containers, added.Volumes = deref(inits), deref(containers), deref(vols)
	lv := psaapi.LevelVersion{Level: level, Version: latest}
	res := policy.AggregateCheckResults(podSecurityChecks.EvaluatePod(lv, meta, &added))
	if res.Allowed {
		return nil
	}
	// Invalid labels read as restricted:latest, as the API server reads them.
	p, _ := psaapi.PolicyToEvaluate(ns.Labels, psaapi.Policy{
		Enforce: psaapi.LevelVersion{Level: psaapi.LevelPrivileged, Version: latest},
	})
	if e := p.Enforce; e.Level != psaapi.LevelPrivileged && passes(e, meta, spec) {
		if enf := policy.AggregateCheckResults(podSecurityChecks.EvaluatePod(e, meta, &added)); !enf.Allowed {
			return fmt.Errorf("namespace %s enforces Pod Security %q, which the pod passes but the containers and volumes mlplane adds do not: %s; "+
				"the InjectionConfig (its templates, loader.securityContext, loader.cache) decides what they ask for",
				ns.Name, e.String(), enf.ForbiddenDetail())
		}
	}
	b.warn("the pod passes Pod Security %q, but the containers and volumes mlplane adds do not: %s; a namespace that enforces %q rejects it",
		lv.String(), res.ForbiddenDetail(), level)
	return nil
}

// deref copies the pointed-to items into a slice.
func deref[T any](ps []*T) []T {
	out := make([]T, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}
