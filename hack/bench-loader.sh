#!/usr/bin/env bash
# hack/bench-loader.sh: mlplane's model loader beside rclone, the AWS CLI
# and aria2, on loopback, with the same model (BENCHMARKS.md, "Model
# loader"). Not part of `make test` or `make bench`.
#
#   hack/bench-loader.sh [bench-loader flags, e.g. --size 2Gi --rounds 3 --tls]
#
# Needs Debian's rclone, awscli and aria2 (apt-get install -y rclone awscli
# aria2); builds bin/model-loader and $BENCH_OUT/bench-loader. Where it can
# (root, or unprivileged user namespaces), it runs the benchmark in a
# network namespace of its own in which only loopback exists, so that no
# client can reach anything but 127.0.0.1. Reports: $BENCH_OUT/loader.{txt,json}.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${BENCH_OUT:-_output/bench}
mkdir -p "$OUT" bin

for t in rclone aws aria2c; do
	[ -x "/usr/bin/$t" ] || { echo "/usr/bin/$t is missing: apt-get install -y rclone awscli aria2" >&2; exit 1; }
done
echo "== building model-loader and bench-loader"
go build -o bin/ ./cmd/model-loader
go build -o "$OUT/" ./hack/bench-loader

if command -v unshare >/dev/null && command -v ip >/dev/null && unshare --net true 2>/dev/null; then
	echo "== in a network namespace with loopback only"
	exec unshare --net sh -c 'ip link set lo up && exec "$@"' sh "$OUT/bench-loader" --out "$OUT" "$@"
elif command -v unshare >/dev/null && command -v ip >/dev/null && unshare --user --map-root-user --net true 2>/dev/null; then
	echo "== in a user and network namespace with loopback only"
	exec unshare --user --map-root-user --net sh -c 'ip link set lo up && exec "$@"' sh "$OUT/bench-loader" --out "$OUT" "$@"
fi
echo "warning: no network namespace could be made; the clients are configured for 127.0.0.1 only, but nothing else stops them" >&2
exec "$OUT/bench-loader" --out "$OUT" "$@"
