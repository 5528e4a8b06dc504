//go:build deps

// This file pins the project's direct dependencies while the packages that use
// them are being written, so concurrent work on one go.mod stays consistent.
package api

import (
	_ "github.com/NVIDIA/go-nvml/pkg/nvml"
	_ "github.com/go-logr/logr"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "k8s.io/api/core/v1"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/klog/v2"
	_ "k8s.io/kube-scheduler/extender/v1"
	_ "sigs.k8s.io/controller-runtime/pkg/webhook"
	_ "sigs.k8s.io/e2e-framework/pkg/env"
	_ "sigs.k8s.io/yaml"
)
