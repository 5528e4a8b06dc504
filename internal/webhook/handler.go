// Package webhook serves internal/mutate as a Kubernetes mutating admission
// webhook: the HTTP handler for AdmissionReviews, the namespace label lookup,
// the InjectionConfig reload, metrics, and the server that wires them with
// controller-runtime's webhook server.
package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kjson "sigs.k8s.io/json"

	"github.com/mlplane/mlplane/internal/mutate"
)

// DefaultMaxBodyBytes bounds a request body: an AdmissionReview holds at most
// two objects of at most 3 MiB each (etcd's request limit, doubled for JSON)
// plus some metadata, as controller-runtime reasons.
const DefaultMaxBodyBytes = 7 << 20

// HandlerOptions configure a Handler.
type HandlerOptions struct {
	// MaxBodyBytes refuses larger request bodies with HTTP 413. Default
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Metrics records requests. Default: unregistered metrics.
	Metrics *Metrics
	// Log receives one line per denied or failed request (verbosity 0) and
	// per mutated pod (verbosity 2). Default: discard.
	Log logr.Logger
	// Policies gives the namespaces' LimitRanges and ResourceQuotas.
	// Default: none (no namespace has any).
	Policies PolicyLister
}

// Handler answers AdmissionReviews for pods on /mutate-pods.
type Handler struct {
	mutators   MutatorSource
	namespaces NamespaceLister
	policies   PolicyLister
	maxBody    int64
	metrics    *Metrics
	log        logr.Logger
	bufs       sync.Pool
}

var _ http.Handler = (*Handler)(nil)

// NewHandler builds a Handler; it panics on nil sources (a programming error).
func NewHandler(mutators MutatorSource, namespaces NamespaceLister, o HandlerOptions) *Handler {
	if mutators == nil || namespaces == nil {
		panic("webhook.NewHandler: nil MutatorSource or NamespaceLister")
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Log.GetSink() == nil {
		o.Log = logr.Discard()
	}
	return &Handler{
		mutators: mutators, namespaces: namespaces, policies: o.Policies, maxBody: o.MaxBodyBytes, metrics: o.Metrics, log: o.Log,
		bufs: sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
}

// httpError is a request the handler cannot answer with an AdmissionReview.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// ServeHTTP answers a POSTed AdmissionReview with the review's response;
// a request it cannot read as one gets a plain HTTP error instead.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	buf := h.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	result, err := h.serve(w, r, buf)
	if buf.Cap() <= 1<<20 {
		h.bufs.Put(buf)
	}
	if err != nil {
		// Declared here, herr costs an allocation (errors.As takes its
		// address) only for requests that fail.
		var herr *httpError
		if errors.As(err, &herr) {
			result = ResultBadRequest
			h.log.Info("Bad admission request", "code", herr.code, "error", herr.msg, "remote", r.RemoteAddr)
			http.Error(w, herr.msg, herr.code)
		}
	}
	h.metrics.observe(result, time.Since(start))
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) (string, error) {
	if r.Method != http.MethodPost {
		return "", &httpError{http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed: want POST", r.Method)}
	}
	// The API server sends exactly "application/json", which needs no
	// parsing (and the allocation of the parameters' map).
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return "", &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not supported: want application/json", ct)}
		}
	}
	if r.ContentLength > h.maxBody {
		return "", tooLarge(h.maxBody)
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, h.maxBody+1)); err != nil {
		return "", &httpError{http.StatusBadRequest, fmt.Sprintf("reading the request body: %v", err)}
	}
	if int64(buf.Len()) > h.maxBody {
		return "", tooLarge(h.maxBody)
	}
	review, err := readReview(buf.Bytes())
	if err != nil {
		return "", err
	}
	req := review.Request
	if req == nil {
		return "", &httpError{http.StatusBadRequest, "malformed AdmissionReview: no request"}
	}
	if review.APIVersion == "" {
		review.APIVersion = admissionv1.SchemeGroupVersion.String()
	}
	if review.Kind == "" {
		review.Kind = "AdmissionReview"
	}
	// The review is decoded (into copies), so buf is free for the answer.
	buf.Reset()
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	result, err := h.admit(r, req, resp)
	if err != nil {
		return "", err
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	if err := json.NewEncoder(buf).Encode(&out); err != nil {
		return "", &httpError{http.StatusInternalServerError, fmt.Sprintf("encoding the response: %v", err)}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
	return result, nil
}

func tooLarge(limit int64) error {
	return &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: the limit is %d bytes", limit)}
}

// reviewIn is the part of an AdmissionReview (v1, or the identical v1beta1)
// the handler reads: decoding userInfo, oldObject and options would only
// cost time.
type reviewIn struct {
	metav1.TypeMeta `json:",inline"`
	Request         *requestIn `json:"request"`
}

type requestIn struct {
	UID         types.UID               `json:"uid"`
	Kind        metav1.GroupVersionKind `json:"kind"`
	SubResource string                  `json:"subResource"`
	Namespace   string                  `json:"namespace"`
	Operation   admissionv1.Operation   `json:"operation"`
	// Object is the object as JSON, for decodePod; pod is set instead
	// where readReview decoded it with the review.
	Object json.RawMessage `json:"object"`
	pod    *corev1.Pod
}

// reviewOnePass is the review and its object decoded together by
// sigs.k8s.io/json, as the API server writes them.
type reviewOnePass struct {
	metav1.TypeMeta `json:",inline"`
	Request         *struct {
		UID         types.UID               `json:"uid"`
		Kind        metav1.GroupVersionKind `json:"kind"`
		SubResource string                  `json:"subResource"`
		Namespace   string                  `json:"namespace"`
		Operation   admissionv1.Operation   `json:"operation"`
		Object      *podIn                  `json:"object"`
	} `json:"request"`
}

// readReview reads an AdmissionReview. A review as the API server writes it
// (exact keys, each once) is read in one pass with sigs.k8s.io/json: the
// review's own keys and the object's case-sensitively, as the API server's
// decoder and controller-runtime's read them, the object straight into podIn
// (decodePod's fields). A review that has no exact "request" with a
// non-null "object", or that fails to decode that way (a syntax or type
// error anywhere), is read again the older way: encoding/json for the
// review, keys in any case, the object kept as JSON for admit to decode
// only when it is a pod, so it gets the answer and the error message it
// always had. Reviews no API server writes (a review key in another case
// beside "request" and "object", a key twice) may be read differently by
// the two ways; FuzzReadReview checks that they agree on every other body.
// Whole handler with the Pod Security change: 0.80x the CPU (BENCHMARKS.md,
// "Webhook handler CPU, second pass").
func readReview(data []byte) (*reviewIn, error) {
	var one reviewOnePass
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &one); err == nil && one.Request != nil && one.Request.Object != nil {
		r := one.Request
		return &reviewIn{TypeMeta: one.TypeMeta, Request: &requestIn{UID: r.UID, Kind: r.Kind, SubResource: r.SubResource,
			Namespace: r.Namespace, Operation: r.Operation, pod: r.Object.pod()}}, nil
	}
	var review reviewIn
	if err := json.Unmarshal(data, &review); err != nil {
		msg := "malformed AdmissionReview: " + err.Error()
		if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
			where := te.Field
			if where == "" {
				where = "the review"
			}
			msg = fmt.Sprintf("malformed AdmissionReview: %s: unexpected JSON %s", where, te.Value)
		}
		return nil, &httpError{http.StatusBadRequest, msg}
	}
	return &review, nil
}

// admit fills resp for one AdmissionRequest.
func (h *Handler) admit(r *http.Request, req *requestIn, resp *admissionv1.AdmissionResponse) (string, error) {
	// A pod's creation, or ephemeral containers added to it (kubectl debug).
	ephemeral := req.SubResource == EphemeralContainers && req.Operation == admissionv1.Update
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || !ephemeral && (req.SubResource != "" || req.Operation != admissionv1.Create) {
		return ResultSkipped, nil
	}
	pod, err := req.pod, error(nil)
	if pod == nil {
		pod, err = decodePod(req.Object)
	}
	if err != nil {
		return "", &httpError{http.StatusBadRequest, fmt.Sprintf("malformed AdmissionReview: request.object is not a Pod: %v", err)}
	}
	m := h.mutators.Mutator()
	if m.Excluded(req.Namespace) {
		return ResultSkipped, nil
	}
	ns := mutate.Namespace{Name: req.Namespace}
	ns.Labels, err = h.namespaces.NamespaceLabels(r.Context(), req.Namespace)
	if err == nil && h.policies != nil {
		ns.LimitRanges, ns.ResourceQuotas, err = h.policies.NamespacePolicies(r.Context(), req.Namespace)
	}
	if err != nil {
		h.log.Error(err, "Cannot decide on a pod", "namespace", req.Namespace, "uid", req.UID)
		resp.Allowed = false
		resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError,
			Reason: metav1.StatusReasonInternalError, Message: "mlplane webhook: " + err.Error()}
		return ResultError, nil
	}
	var res mutate.Result
	if ephemeral {
		res = m.Ephemeral(pod, ns)
	} else {
		res, err = m.Mutate(pod, ns)
	}
	resp.Warnings = res.Warnings
	if err != nil {
		h.log.Info("Denied pod", "namespace", req.Namespace, "name", podName(pod), "error", err.Error())
		resp.Allowed = false
		resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusBadRequest,
			Reason: metav1.StatusReasonBadRequest, Message: err.Error()}
		return ResultDenied, nil
	}
	if len(res.Patch) == 0 {
		return ResultSkipped, nil
	}
	patch, err := json.Marshal(res.Patch)
	if err != nil {
		return "", &httpError{http.StatusInternalServerError, fmt.Sprintf("encoding the patch: %v", err)}
	}
	resp.Patch, resp.PatchType = patch, &jsonPatch
	if v := h.log.V(2); v.Enabled() {
		v.Info("Mutated pod", "namespace", req.Namespace, "name", podName(pod), "injected", res.Injected)
	}
	return ResultMutated, nil
}

// EphemeralContainers is the pod subresource through which ephemeral
// containers are added; the webhook is registered for its updates (see
// mutate.Mutator.Ephemeral).
const EphemeralContainers = "ephemeralcontainers"

// jsonPatch is every response's PatchType, shared: responses are only
// encoded.
var jsonPatch = admissionv1.PatchTypeJSONPatch

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName
}
