# mlplane's build. `make demo` runs the local cluster demo, `make test` runs
# every test (lint, unit, end-to-end) and is what CI runs.

GO        ?= go
BIN       := $(CURDIR)/bin
GOFLAGS   ?=
E2E_FLAGS ?=
export PATH := $(BIN):$(PATH)
# go-nvml's header marks many NVML calls deprecated; the warnings drown test output.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

BINARIES := webhook extender node-agent model-loader metrics-apiserver
# go-nvml binds libnvidia-ml with dlopen through cgo; every other binary is
# static (CGO_ENABLED=0), as in its image.
CGO_BINARIES := node-agent

.PHONY: all build test unit e2e bench bench-long lint fmt tools demo demo-autoscale demo-down fuzz svgs images clean

all: build

## build: the five binaries into bin/
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(filter-out $(CGO_BINARIES),$(BINARIES)))
	CGO_ENABLED=1 $(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CGO_BINARIES))

## tools: pinned control-plane binaries (etcd, kube-*, kubectl, kwok, kustomize) and the real node's (kubelet, kube-proxy, containerd, CNI plugins; runc and nft from Debian when missing) into bin/, rebuilt only when hack/tools/ changes
tools:
	@hack/tools/build.sh $(BIN)

## test: lint, unit tests, then the end-to-end suite on a real local control plane
test: lint unit e2e

## unit: every package's tests (race detector on; test/bench's tests are its parsers and /proc readers); Azurite (hack/azurite.sh, npm) serves the azblob source's tests;
## then test/validation, a module of its own that checks the webhook with the API server's defaulting and validation code
## (k8s.io/kubernetes; no race detector: it runs one goroutine, and instrumenting that code costs minutes)
unit:
	MLPLANE_AZURITE=$$(hack/azurite.sh) $(GO) test -race -count=1 ./internal/... ./cmd/... ./examples/... ./hack/images/... ./hack/bench-loader/... ./test/bench/...
	cd test/validation && $(GO) test -count=1 ./...

## e2e: the end-to-end suite against etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK built from Go modules,
## then the install test (test/install: config/ applied, mlplane as pods on the real node); one at a time (-p 1): one real node per host
e2e: tools build
	$(GO) test -count=1 -p 1 -timeout 45m ./test/e2e/... ./test/install/... -args $(E2E_FLAGS)

## bench: go benchmarks, the webhook under load beside a no-op webhook, the node agent's footprint, packing (a few minutes; see BENCHMARKS.md)
bench: tools
	hack/bench.sh

## bench-long: scheduling throughput, 1,000 KWOK nodes x 8 GPUs, 5,000 pods, with and without the extender
bench-long: tools
	hack/bench-long.sh

## lint: go vet and gofmt
lint:
	$(GO) vet ./...
	cd test/validation && $(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

## demo: start a local cluster with fake GPU nodes, deploy mlplane and the examples, print the placement
## (hack/demo builds each of its four binaries itself, and leaves out one that does not build yet); DEMO_FLAGS=--autoscale or make demo-autoscale adds the autoscaling scene
demo: tools
	$(GO) run ./hack/demo up $(DEMO_FLAGS)

## demo-autoscale: make demo, then a HorizontalPodAutoscaler scaling a Deployment up and down on GPU utilisation through the custom metrics API, as a table
demo-autoscale: tools
	$(GO) run ./hack/demo up --autoscale $(DEMO_FLAGS)

## demo-down: stop the demo cluster
demo-down:
	$(GO) run ./hack/demo down

## fuzz: every fuzz target in the tree (found by hack/fuzz.sh, both modules), one after the other, FUZZTIME each
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

## svgs: redraw docs/benchmarks/<trace>.svg (extender simulate --svg, default policy) for each trace in examples/traces;
## make unit fails while they differ from what simulate draws (TestDocsSVGs)
svgs:
	$(GO) test -count=1 -run '^TestDocsSVGs$$' ./cmd/extender -update

## images: the container images without Docker (hack/images): an OCI layout and a docker archive in _output/images/;
## IMAGES_FLAGS='--push 127.0.0.1:5000/mlplane' also pushes, '--only pause --platforms linux/amd64' builds less (docs/install.md)
IMAGES_FLAGS ?=
images:
	$(GO) run ./hack/images $(IMAGES_FLAGS)

clean:
	rm -rf $(BIN)
