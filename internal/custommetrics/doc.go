// Package custommetrics serves the GPU figures of mlplane's node agents
// through the Kubernetes custom metrics API (custom.metrics.k8s.io,
// v1beta1 and v1beta2) as an aggregated API server built on
// sigs.k8s.io/custom-metrics-apiserver, so that a HorizontalPodAutoscaler
// (autoscaling/v2, type Pods) scales inference Deployments on GPU
// utilisation or GPU memory without Prometheus.
//
// It collects the way metrics-server collects from kubelets: every
// Interval a Collector lists the Nodes, scrapes each node agent's /metrics
// at the address the agent publishes on its Node
// (api.NodeAnnotationAgentMetrics), concurrently and with a timeout, and
// keeps the latest per-pod figures of each node in a Store. The Provider
// answers the API from the Store: per pod, or for the pods of a namespace
// that match a label selector (what the HPA asks). A node's figures older
// than 2 intervals are not served.
//
// Per pod, over the pod's GPUs (docs/autoscaling.md):
//   - gpu_memory_used_bytes: memory the pod's processes hold, summed;
//   - gpu_memory_booked_bytes: memory the pod booked, summed;
//   - gpu_utilization: percent (0-100) of the busiest GPU's time that the
//     pod's kernels ran, the maximum.
package custommetrics
