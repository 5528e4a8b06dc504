// Package validation checks the webhook's mutations with the API server's
// own code: the pod defaulting and validation of k8s.io/kubernetes
// (pkg/apis/core/v1, pkg/apis/core/validation), which is not importable
// from the main module without pinning its ~30 staging modules there. It
// is a module of its own (test/validation/go.mod, with those pins), so
// that only these tests compile it; `make unit` runs them.
package validation
