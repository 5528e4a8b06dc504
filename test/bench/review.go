package bench

import (
	"encoding/json"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mlplane/mlplane/internal/api"
)

// BenchNamespace is the opted-in namespace the load generator's pods are in.
const BenchNamespace = "ml-bench"

// VLLMPod is a typical vLLM server pod as the API server sends it to the
// webhook (the pod of internal/webhook's handler tests: a Hugging Face model
// with a token, one 40Gi GPU slice, a version), in namespace, with
// containers-1 small sidecars after the serving container. containers < 1
// counts as 1. The webhook's built-in configuration mutates it.
func VLLMPod(namespace string, containers int) *corev1.Pod {
	q := resource.MustParse
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "llama-8b-7d9f-", Namespace: namespace,
			Labels: map[string]string{"app": "llama-8b", "pod-template-hash": "7d9f"},
			Annotations: map[string]string{
				api.AnnotationModelURI:     "hf://meta-llama/Llama-3.1-8B-Instruct",
				api.AnnotationModelSecret:  "hf-token",
				api.AnnotationModelVersion: "3.1",
				api.AnnotationGPUMemory:    "40Gi",
			},
		},
		Spec: corev1.PodSpec{
			SchedulerName: corev1.DefaultSchedulerName,
			Containers: []corev1.Container{{
				Name: "vllm", Image: "vllm/vllm-openai:v0.6.3",
				Args:  []string{"--model", "/mnt/models", "--gpu-memory-utilization", "0.45", "--port", "8000"},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8000}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("http")}}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: q("4"), corev1.ResourceMemory: q("24Gi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: q("48Gi")},
				},
			}},
		},
	}
	for i := 1; i < containers; i++ {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name: fmt.Sprintf("sidecar-%d", i), Image: "registry.example/log-shipper:1.4",
			Args:  []string{"--listen=:9100", "--upstream=http://127.0.0.1:8000"},
			Env:   []corev1.EnvVar{{Name: "SHIPPER_ID", Value: fmt.Sprintf("s%d", i)}},
			Ports: []corev1.ContainerPort{{Name: fmt.Sprintf("m%d", i), ContainerPort: int32(9100 + i)}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("50m"), corev1.ResourceMemory: q("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: q("128Mi")},
			},
		})
	}
	return pod
}

// AdmissionReview is the JSON AdmissionReview (CREATE) the API server sends
// for pod.
func AdmissionReview(pod *corev1.Pod) ([]byte, error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	return json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("0f6d5e2c-1111-4c3a-9a57-5d1f1b8c0b11"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: pod.Namespace, Operation: admissionv1.Create,
			UserInfo: authnUser,
			Object:   runtime.RawExtension{Raw: raw},
		},
	})
}

// authnUser is who creates a Deployment's pods: the ReplicaSet controller.
var authnUser = authenticationv1.UserInfo{
	Username: "system:serviceaccount:kube-system:replicaset-controller",
	UID:      "5b1c0c5e-8d0e-4a8c-9a57-0c1f1b8c0b22",
	Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
}
