#!/usr/bin/env bash
# hack/bench-long.sh: scheduling throughput on the local control plane,
# 1,000 KWOK nodes x 8 GPUs, 5,000 pods, with mlplane-scheduler and the
# extender and with the default scheduler alone, in one cluster (about 10
# minutes on 2 cores). Needs `make tools`.
#
#   hack/bench-long.sh [bench sched flags, e.g. --rounds 2 --modes plain,extender]
#
# Report: ${BENCH_OUT:-_output/bench}/sched.{txt,json}. See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${BENCH_OUT:-_output/bench}
mkdir -p "$OUT" bin
go build -o bin/ ./cmd/extender
go build -o "$OUT/" ./hack/bench
for t in kube-apiserver kube-controller-manager kube-scheduler etcd kwok; do
	[ -x "bin/$t" ] || { echo "bin/$t is missing: run make tools" >&2; exit 1; }
done
"$OUT/bench" sched --out "$OUT" "$@"
