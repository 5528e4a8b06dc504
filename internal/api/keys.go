// Package api is mlplane's one declaration of everything that crosses a process
// boundary: the labels and annotations users and components write, the extended
// resource name, the node inventory format the node agent publishes and the
// extender reads, and the GPU assignment the extender writes to pods.
//
// Every binary, test and document uses these constants; a key spelled as a
// string literal anywhere else is a bug.
package api

// LabelExtenderLeader marks, with the value "true", the pod of the extender
// replica that leads: the extender's Service selects it, so the scheduler
// always reaches the leader while every synced replica counts as Ready
// (which rolling updates need). The leader sets it once it has seeded its
// state; a starting replica removes it from its own pod.
const LabelExtenderLeader = "mlplane.io/extender-leader"

// Opt-in and opt-out labels.
const (
	// LabelInject opts a namespace (value NamespaceInjectEnabled) or a pod
	// (value PodInjectTrue) into mutation; PodInjectFalse on a pod opts it out.
	LabelInject = "mlplane.io/inject"
	// NamespaceInjectEnabled is the namespace label value that opts every pod in.
	NamespaceInjectEnabled = "enabled"
	// PodInjectTrue is the pod label value that opts a single pod in.
	PodInjectTrue = "true"
	// PodInjectFalse is the pod label value that opts a pod out, whatever its
	// namespace says.
	PodInjectFalse = "false"
)

// Pod annotations a user writes.
const (
	// AnnotationModelURI says where the model is: s3://, gs://, hf://,
	// https://, azblob://, oci:// or pvc://CLAIM/PATH.
	AnnotationModelURI = "mlplane.io/model-uri"
	// AnnotationModelAllowPatterns is a comma-separated list of file name
	// patterns; when set, the loader fetches only the files matching one of
	// them (huggingface_hub's allow_patterns: fnmatch rules, "*" matches
	// "/" too, a pattern ending in "/" means everything under it).
	AnnotationModelAllowPatterns = "mlplane.io/model-allow-patterns"
	// AnnotationModelIgnorePatterns is a comma-separated list of file name
	// patterns the loader skips (huggingface_hub's ignore_patterns).
	AnnotationModelIgnorePatterns = "mlplane.io/model-ignore-patterns"
	// AnnotationModelSecret names a Secret in the pod's own namespace holding
	// storage credentials for the model loader.
	AnnotationModelSecret = "mlplane.io/model-secret"
	// AnnotationModelName is the model's name; it defaults to the last path
	// element of the model URI.
	AnnotationModelName = "mlplane.io/model-name"
	// AnnotationModelVersion is the model's version.
	AnnotationModelVersion = "mlplane.io/model-version"
	// AnnotationGPUMemory is the GPU memory needed on each GPU, a quantity
	// such as 20Gi or 16384Mi (see ParseGPUMemory). It is spelled as
	// ResourceGPUMemory but means something else: memory per GPU, as a
	// quantity of bytes, where the resource is the pod's total over all its
	// GPUs, in MiB. See ResourceGPUMemory for why the two share one name.
	AnnotationGPUMemory = "mlplane.io/gpu-memory"
	// AnnotationGPUCount is how many GPUs the pod needs (default 1).
	AnnotationGPUCount = "mlplane.io/gpu-count"
	// AnnotationGPUModel is a comma-separated list of GPU models the pod may
	// run on ("H100,A100"); a GPU of any other model is never picked. See
	// GPUModels for the matching rule (HAMi's nvidia.com/use-gputype).
	AnnotationGPUModel = "mlplane.io/gpu-model"
	// AnnotationGPUModelAvoid is a comma-separated list of GPU models the pod
	// must not run on ("L4"), matched as AnnotationGPUModel is (HAMi's
	// nvidia.com/nouse-gputype).
	AnnotationGPUModelAvoid = "mlplane.io/gpu-model-avoid"
	// AnnotationTemplates is a comma-separated list of admin-defined sidecar
	// templates.
	AnnotationTemplates = "mlplane.io/templates"
	// AnnotationProfile names a resource-default profile (default "default").
	AnnotationProfile = "mlplane.io/profile"
	// AnnotationContainer names the container that serves the model (default:
	// the one AnnotationDefaultContainer names, else the first container).
	AnnotationContainer = "mlplane.io/container"
	// AnnotationDefaultContainer is kubectl's: it names the pod's main
	// container (k8s.io/kubectl pkg/cmd/util/podcmd,
	// DefaultContainerAnnotationName). Injectors that put their proxy first
	// (Istio with holdApplicationUntilProxyStarts, Linkerd) set it to the
	// application's container; mlplane serves from it when the pod does not
	// say AnnotationContainer.
	AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"
	// AnnotationPlacement overrides the placement strategy for one pod:
	// "binpack" or "spread".
	AnnotationPlacement = "mlplane.io/placement"
)

// Annotations and labels mlplane writes.
const (
	// AnnotationStatus records what the webhook injected; a pod carrying it is
	// not mutated again.
	AnnotationStatus = "mlplane.io/status"
	// AnnotationGPUIDs holds the UUIDs of the GPUs the extender assigned to
	// the pod, comma-separated, written at bind time.
	AnnotationGPUIDs = "mlplane.io/gpu-ids"
	// LabelModel is the model name, set on the pod by the webhook unless the
	// pod already has it.
	LabelModel = "mlplane.io/model"
	// LabelModelVersion is the model version, set on the pod by the webhook
	// unless the pod already has it.
	LabelModelVersion = "mlplane.io/model-version"
	// LabelAppVersion is the well-known version label, set where absent.
	LabelAppVersion = "app.kubernetes.io/version"
	// NodeAnnotationGPUs holds the node's GPU inventory, a JSON list of GPU,
	// written by the node agent.
	NodeAnnotationGPUs = "mlplane.io/gpus"
	// NodeAnnotationAgentMetrics is where the node's agent serves its
	// Prometheus metrics, "host:port" (path /metrics, plain HTTP), written
	// by the agent: the custom metrics API server scrapes it, as
	// metrics-server scrapes the kubelet at node.status.daemonEndpoints.
	NodeAnnotationAgentMetrics = "mlplane.io/node-agent-metrics"
)

// Pods over their GPU memory budget (issue 17): a pod whose processes use
// more GPU memory on a GPU than it booked there.
const (
	// LabelEvictOverBudget, with the value "true" on a namespace, lets node
	// agents started with --evict-over-budget evict that namespace's pods
	// that stay over budget (through the Eviction API, so that
	// PodDisruptionBudgets hold). Off for every namespace by default.
	LabelEvictOverBudget = "mlplane.io/evict-over-budget"
	// EventReasonOverBudget is the Warning event on such a pod.
	EventReasonOverBudget = "GPUMemoryOverBudget"
	// EventReasonOverBudgetEvicted is the Warning event on a pod the agent
	// evicted for it; EventReasonOverBudgetEvictionRefused when the API
	// server refused the eviction (a PodDisruptionBudget).
	EventReasonOverBudgetEvicted         = "GPUMemoryOverBudgetEvicted"
	EventReasonOverBudgetEvictionRefused = "GPUMemoryOverBudgetEvictionRefused"
)

// ResourceGPUMemory is the extended resource, in MiB, that GPU pods request
// and nodes advertise (sum over healthy GPUs).
//
// One name, two meanings, kept on purpose. The annotation
// AnnotationGPUMemory is what a user writes: memory per GPU, a quantity of
// bytes ("20Gi"). This resource is what the webhook writes from it: the
// pod's total over mlplane.io/gpu-count GPUs, a count of MiB (20480 x 2 =
// "40960"), the number kube-scheduler and ResourceQuotas add up, and what
// the node agent advertises as the node's total. Annotations and resources
// are separate namespaces in the API, so nothing reads one as the other;
// the webhook denies a bare number in the annotation precisely because it
// would read as MiB here and as bytes there (ParseGPUMemory). Renaming the
// resource would break every ResourceQuota, admission policy and dashboard
// written against it and, during an upgrade, leave pods requesting the new
// name unschedulable on nodes whose agents still advertise the old one (and
// pods created before it requesting a resource no node has), for a gain in
// spelling only; docs/webhook.md ("One name: the annotation and the
// resource") says the same to users.
const ResourceGPUMemory = "mlplane.io/gpu-memory"

// Environment variables the webhook sets in the serving container.
const (
	// EnvNvidiaVisibleDevices is read by the NVIDIA container runtime. The
	// webhook always sets it, from the downward API field of AnnotationGPUIDs:
	// an empty value means "no GPU" to the runtime, while an unset one can
	// mean "all GPUs" for legacy CUDA images.
	EnvNvidiaVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	// EnvGPUMemoryMiB is the per-GPU memory budget in MiB, so servers such as
	// vLLM can size themselves.
	EnvGPUMemoryMiB = "MLPLANE_GPU_MEMORY_MIB"
	// EnvModelURI is the model URI as the user gave it.
	EnvModelURI = "MODEL_URI"
	// EnvModelDir is where the model files are inside the container.
	EnvModelDir = "MODEL_DIR"
	// EnvModelManifest is the path of the loader's manifest
	// (ModelManifestFile in MODEL_DIR), set in the serving container.
	EnvModelManifest = "MODEL_MANIFEST"
)

// Environment variables the webhook sets in the model-loader init container;
// each is also a flag of model-loader (the flag wins), see
// cmd/model-loader.
const (
	// EnvLoaderAllowPatterns carries AnnotationModelAllowPatterns.
	EnvLoaderAllowPatterns = "MLPLANE_ALLOW_PATTERNS"
	// EnvLoaderIgnorePatterns carries AnnotationModelIgnorePatterns.
	EnvLoaderIgnorePatterns = "MLPLANE_IGNORE_PATTERNS"
	// EnvLoaderCacheDir is the node cache's mount path in the loader, set
	// when the InjectionConfig enables the node cache.
	EnvLoaderCacheDir = "MLPLANE_CACHE_DIR"
	// EnvLoaderCacheMaxSize bounds the node cache, a quantity ("500Gi").
	EnvLoaderCacheMaxSize = "MLPLANE_CACHE_MAX_SIZE"
	// EnvLoaderVolumeSize is the model volume's size limit, a quantity, so
	// the loader refuses a model that cannot fit before downloading it
	// (statfs does not see an emptyDir's sizeLimit).
	EnvLoaderVolumeSize = "MLPLANE_VOLUME_SIZE"
)

// Project-wide names.
const (
	// ModelMountPath is where the model volume is mounted.
	ModelMountPath = "/mnt/models"
	// ModelManifestFile is the file the model loader writes last into
	// MODEL_DIR, as its completion marker: a JSON object with apiVersion
	// "mlplane.io/v1alpha1", kind "ModelManifest", uri (credentials
	// redacted), revision (the resolved commit, digest or listing digest),
	// files (path, size in bytes, and the hex sha256, crc64nvme, crc32c or
	// md5 the file was verified against, when the source gives one) and
	// bytes (the total). A serving container may read it to learn what it
	// serves.
	ModelManifestFile = ".mlplane-manifest.json"
	// ModelCacheMountPath is where the node cache (a hostPath volume) is
	// mounted in the loader when the InjectionConfig enables it.
	ModelCacheMountPath = "/var/cache/mlplane-models"
	// DefaultSchedulerName is the scheduler profile that runs the extender.
	DefaultSchedulerName = "mlplane-scheduler"
	// DefaultNamespace is the namespace mlplane itself runs in; it is never
	// mutated.
	DefaultNamespace = "mlplane-system"
	// NodeAgentNamespace is the namespace of the node agent DaemonSet
	// (config/base/namespace.yaml): Pod Security "privileged", for its
	// hostPID, while DefaultNamespace enforces "restricted". Never mutated.
	NodeAgentNamespace = "mlplane-node-agent"
	// FieldManager is the field manager name mlplane's components write with.
	FieldManager = "mlplane"
	// WebhookPath is the URL path the API server sends pod AdmissionReviews
	// to (the MutatingWebhookConfiguration's clientConfig path).
	WebhookPath = "/mutate-pods"
	// ExtenderClientName is the subject common name of the client
	// certificate kube-scheduler presents to the extender, the one the
	// extender accepts by default (extender --client-names).
	ExtenderClientName = "mlplane-scheduler"
)

// SystemNamespaces are never mutated, whatever their labels.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}
