// Package dashboard holds the test that keeps the Grafana dashboard in
// config/prometheus in step with the metrics the components register. It
// is apart from package manifests because it links the node agent (go-nvml
// resolves NVML symbols lazily) and must not share a binary with the
// kustomize library, which imports package plugin and so makes the binary
// resolve every symbol at load.
package dashboard
