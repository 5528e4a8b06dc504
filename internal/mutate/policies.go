package mutate

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"
)

// A namespace's LimitRanges and ResourceQuotas (issue 14 kind 8). The API
// server judges every container of a pod by them, the ones mlplane adds
// included, but its LimitRanger admission plugin gives defaults only to the
// containers it sees, before the webhooks: the containers mlplane adds to a
// served pod come too late for them (those `webhook inject` writes into a
// template get them when the pod is created). So, for the containers it
// adds, mlplane does what the API server would have done:
//
//   - the LimitRanger's defaults (k8s.io/kubernetes
//     plugin/pkg/admission/limitranger, mergeContainerResources): each
//     LimitRange item of type Container fills a missing limit from its
//     default and a missing request from its defaultRequest, after the
//     requests the API server defaults from limits (the order a created
//     pod sees them in);
//   - the LimitRanger's checks of min and max (minConstraint,
//     maxConstraint): a container it would refuse is denied, saying which
//     LimitRange and which value of the InjectionConfig;
//   - the ResourceQuota admission's rule that, where a quota counts cpu or
//     memory (requests or limits), every container sets it (k8s.io/kubernetes
//     pkg/quota/v1/evaluator/core, podEvaluator.Constraints; not for a pod
//     with pod-level resources): a container mlplane adds that sets none is
//     denied for a quota without scopes, with a warning for a scoped one
//     (its scopes may not select the pod).
//
// Offline, nothing is known of the namespace (Namespace.LimitRanges and
// ResourceQuotas are nil) and nothing of this is done: the API server does
// it when the pod is created.

// quotaRequired are the quota resources for which every container must set
// a value, and what it must set: validationSet of podEvaluator.
var quotaRequired = []struct {
	name  corev1.ResourceName
	res   corev1.ResourceName
	limit bool
}{
	{corev1.ResourceCPU, corev1.ResourceCPU, false},
	{corev1.ResourceRequestsCPU, corev1.ResourceCPU, false},
	{corev1.ResourceLimitsCPU, corev1.ResourceCPU, true},
	{corev1.ResourceMemory, corev1.ResourceMemory, false},
	{corev1.ResourceRequestsMemory, corev1.ResourceMemory, false},
	{corev1.ResourceLimitsMemory, corev1.ResourceMemory, true},
}

// namespacePolicies applies and checks ns's LimitRanges and ResourceQuotas
// for the added containers, whose resources it may change.
func (b *builder) namespacePolicies(added []injected, ns Namespace) error {
	if len(ns.LimitRanges) == 0 && len(ns.ResourceQuotas) == 0 {
		return nil
	}
	for _, a := range added {
		r := a.c.Resources.DeepCopy()
		if hasContainerItems(ns.LimitRanges) {
			defaultResources(r)
		}
		for _, lr := range ns.LimitRanges {
			for _, item := range lr.Spec.Limits {
				if item.Type != corev1.LimitTypeContainer {
					continue
				}
				r.Limits = fill(r.Limits, item.Default)
				r.Requests = fill(r.Requests, item.DefaultRequest)
			}
		}
		a.c.Resources = *r
	}
	for _, a := range added {
		r := a.c.Resources.DeepCopy()
		defaultResources(r) // what the API server validates
		for _, lr := range ns.LimitRanges {
			for _, item := range lr.Spec.Limits {
				if item.Type != corev1.LimitTypeContainer {
					continue
				}
				if why := limitRangeViolation(item, r); why != "" {
					return fmt.Errorf("%s: container %q breaks LimitRange %q of namespace %s: %s; change the container's resources in the InjectionConfig (or its profile), or the LimitRange",
						a.from, a.c.Name, lr.Name, ns.Name, why)
				}
			}
		}
		if resourcehelper.IsPodLevelResourcesSet(b.pod) {
			continue
		}
		for _, q := range ns.ResourceQuotas {
			for _, req := range quotaRequired {
				if _, counted := q.Spec.Hard[req.name]; !counted {
					continue
				}
				list, what := r.Requests, "requests."
				if req.limit {
					list, what = r.Limits, "limits."
				}
				if _, ok := list[req.res]; ok {
					continue
				}
				msg := fmt.Sprintf("%s: container %q sets no %s%s, which ResourceQuota %q of namespace %s requires of every container (it counts %s); neither the InjectionConfig, the profile %q nor a LimitRange of the namespace gives it one: set it in the profile or the InjectionConfig, or give the namespace a LimitRange default",
					a.from, a.c.Name, what, req.res, q.Name, ns.Name, req.name, b.plan.profile.Name)
				if len(q.Spec.Scopes) > 0 || q.Spec.ScopeSelector != nil {
					b.warn("%s (if the quota's scopes select the pod)", msg)
					continue
				}
				return fmt.Errorf("%s", msg)
			}
		}
	}
	return nil
}

// hasContainerItems reports whether a LimitRange has an item of type
// Container, which makes the LimitRanger act on containers.
func hasContainerItems(lrs []corev1.LimitRange) bool {
	for _, lr := range lrs {
		if slices.ContainsFunc(lr.Spec.Limits, func(i corev1.LimitRangeItem) bool { return i.Type == corev1.LimitTypeContainer }) {
			return true
		}
	}
	return false
}

// fill returns l with the entries of defaults it lacks, as a copy when it
// adds any.
func fill(l, defaults corev1.ResourceList) corev1.ResourceList {
	var out corev1.ResourceList
	for name, q := range defaults {
		if _, ok := l[name]; ok {
			continue
		}
		if out == nil {
			out = make(corev1.ResourceList, len(l)+len(defaults))
			for k, v := range l {
				out[k] = v
			}
		}
		out[name] = q.DeepCopy()
	}
	if out == nil {
		return l
	}
	return out
}

// limitRangeViolation says how r breaks item's min and max, as the
// LimitRanger words it, or returns "".
func limitRangeViolation(item corev1.LimitRangeItem, r *corev1.ResourceRequirements) string {
	var why []string
	for _, name := range sortedNames(item.Min) {
		min := item.Min[name]
		req, hasReq := r.Requests[name]
		lim, hasLim := r.Limits[name]
		switch {
		case !hasReq:
			why = append(why, fmt.Sprintf("its minimum %s per container is %s, and no request is set", name, min.String()))
		case req.Cmp(min) < 0:
			why = append(why, fmt.Sprintf("its minimum %s per container is %s, but the request is %s", name, min.String(), req.String()))
		case hasLim && lim.Cmp(min) < 0:
			why = append(why, fmt.Sprintf("its minimum %s per container is %s, but the limit is %s", name, min.String(), lim.String()))
		}
	}
	for _, name := range sortedNames(item.Max) {
		max := item.Max[name]
		req, hasReq := r.Requests[name]
		lim, hasLim := r.Limits[name]
		switch {
		case !hasLim:
			why = append(why, fmt.Sprintf("its maximum %s per container is %s, and no limit is set", name, max.String()))
		case lim.Cmp(max) > 0:
			why = append(why, fmt.Sprintf("its maximum %s per container is %s, but the limit is %s", name, max.String(), lim.String()))
		case hasReq && req.Cmp(max) > 0:
			why = append(why, fmt.Sprintf("its maximum %s per container is %s, but the request is %s", name, max.String(), req.String()))
		}
	}
	return strings.Join(why, "; ")
}
