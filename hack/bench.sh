#!/usr/bin/env bash
# hack/bench.sh: the benchmarks that fit in a few minutes (what `make bench`
# runs). Needs `make tools` (the local control plane) and builds the rest.
#
#   hack/bench.sh [bench short flags, e.g. --rounds 5 --duration 10s]
#
# Environment: BENCH_OUT (default _output/bench), BENCH_COUNT (go test
# -count, default 5), BENCH_PACKAGES (default: internal/... and test/bench).
# Reports: $BENCH_OUT/{gobench,webhook,agent,admission,packing,custommetrics}.{txt,json}; SVGs in
# docs/benchmarks/. See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${BENCH_OUT:-_output/bench}
COUNT=${BENCH_COUNT:-5}
PACKAGES=${BENCH_PACKAGES:-./internal/... ./test/bench/}
mkdir -p "$OUT" bin

echo "== building mlplane and the benchmark tools"
go build -o bin/ ./cmd/webhook ./cmd/extender ./cmd/node-agent ./cmd/metrics-apiserver
go build -o "$OUT/" ./hack/bench ./hack/noop-webhook ./hack/loadgen
for t in kube-apiserver kube-controller-manager kube-scheduler etcd kwok; do
	[ -x "bin/$t" ] || { echo "bin/$t is missing: run make tools" >&2; exit 1; }
done

echo "== go benchmarks (-count $COUNT): handler by pod size, extender by cluster size, per-package hot paths"
# shellcheck disable=SC2086
go test -run '^$' -bench . -benchmem -count "$COUNT" $PACKAGES | tee "$OUT/gobench.raw.txt"
"$OUT/bench" gobench --out "$OUT" "$OUT/gobench.raw.txt"

echo "== webhook under load beside the no-op webhook, node agent footprint, pod creation with and without the webhook, packing"
"$OUT/bench" short --out "$OUT" --noop "$OUT/noop-webhook" "$@"

echo "== the custom metrics API server: 1,000 pods on 125 nodes (stand-in agents), footprint and latency through kube-apiserver"
"$OUT/bench" custommetrics --out "$OUT"
