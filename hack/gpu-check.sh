#!/usr/bin/env bash
# Compares what `node-agent inventory --backend nvml` reads with nvidia-smi,
# on a machine with a real NVIDIA GPU.
#
#   hack/gpu-check.sh                 # builds bin/node-agent (needs Go, cgo and the module cache)
#   BIN=bin/node-agent hack/gpu-check.sh   # uses a prebuilt binary (no Go needed)
#
# UUIDs and memory.total must match exactly; memory.used may differ by
# USED_TOLERANCE_MIB (default 64), since it moves between the two reads.
# Prints both tables and PASS or FAIL; exits 0 on PASS, 1 on FAIL, 2 when it
# cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
tol=${USED_TOLERANCE_MIB:-64}

if ! command -v nvidia-smi >/dev/null 2>&1; then
	echo "gpu-check: nvidia-smi not found: not a machine with an NVIDIA driver" >&2
	exit 2
fi
if [[ -z "${BIN:-}" ]]; then
	BIN=bin/node-agent
	echo "gpu-check: building $BIN"
	mkdir -p bin
	CGO_ENABLED=1 CGO_CFLAGS="${CGO_CFLAGS:--Wno-deprecated-declarations}" go build -o "$BIN" ./cmd/node-agent
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nvidia-smi --query-gpu=driver_version,name --format=csv,noheader | head -1 | sed 's/^/gpu-check: driver, model: /'
nvidia-smi --query-gpu=uuid,memory.total,memory.used --format=csv,noheader,nounits |
	tr -d ' ' | sort >"$tmp/smi.csv"
"$BIN" inventory --backend nvml >"$tmp/inventory.json" 2>"$tmp/inventory.err" || {
	echo "gpu-check: $BIN inventory failed:" >&2
	cat "$tmp/inventory.err" >&2
	exit 1
}
# The inventory is indented JSON, one field per line (api.GPU).
awk -F'[:,]' '
	/"uuid"/      { gsub(/[ "]/, "", $2); uuid = $2 }
	/"memoryMiB"/ { gsub(/ /, "", $2); total = $2 }
	/"usedMiB"/   { gsub(/ /, "", $2); print uuid "," total "," $2 }
' "$tmp/inventory.json" | sort >"$tmp/agent.csv"

echo "--- nvidia-smi (uuid,memory.total MiB,memory.used MiB)"
cat "$tmp/smi.csv"
echo "--- node-agent inventory --backend nvml (uuid,memoryMiB,usedMiB)"
cat "$tmp/agent.csv"
cat "$tmp/inventory.err"
echo "--- node-agent inventory JSON"
cat "$tmp/inventory.json"

fail=0
if [[ ! -s "$tmp/smi.csv" ]]; then
	echo "FAIL: nvidia-smi lists no GPU"
	fail=1
fi
if ! diff <(cut -d, -f1 "$tmp/smi.csv") <(cut -d, -f1 "$tmp/agent.csv") >/dev/null; then
	echo "FAIL: the GPU UUIDs differ"
	fail=1
fi
while IFS=, read -r uuid total used; do
	line=$(grep "^$uuid," "$tmp/agent.csv" || true)
	[[ -z "$line" ]] && continue
	IFS=, read -r _ atotal aused <<<"$line"
	if [[ "$total" != "$atotal" ]]; then
		echo "FAIL: $uuid memory.total $total MiB, agent $atotal MiB"
		fail=1
	fi
	d=$((used - aused))
	d=${d#-}
	if ((d > tol)); then
		echo "FAIL: $uuid memory.used $used MiB, agent $aused MiB (more than $tol MiB apart)"
		fail=1
	fi
done <"$tmp/smi.csv"
if ((fail)); then
	echo FAIL
	exit 1
fi
echo "PASS: $(wc -l <"$tmp/smi.csv") GPU(s): UUIDs and memory.total equal, memory.used within $tol MiB"
