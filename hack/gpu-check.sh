#!/usr/bin/env bash
# Compares what `node-agent inventory --backend nvml` reads with nvidia-smi,
# on a machine with a real NVIDIA GPU.
#
#   hack/gpu-check.sh                 # builds bin/node-agent (needs Go, cgo and the module cache)
#   BIN=bin/node-agent hack/gpu-check.sh   # uses a prebuilt binary (no Go needed)
#
# UUIDs and memory.total must match exactly; memory.used may differ by
# USED_TOLERANCE_MIB (default 64), since it moves between the two reads.
#
# Then the per-process check (skipped with ALLOC_MIB=0): a process outside
# any pod allocates ALLOC_MIB (default 4096) on the first GPU with PyTorch
# (python3 must import torch), and the agent's reading of that process
# (inventory --processes) must equal nvidia-smi --query-compute-apps'
# used_memory exactly (both come from NVML), and the GPU's outsideUsedMiB
# (used memory no pod explains, what the extender keeps from bookings) must
# be at least that and within USED_TOLERANCE_MIB of memory.used.
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

alloc=${ALLOC_MIB:-4096}
((alloc > 0)) || exit 0
uuid0=$(head -1 "$tmp/smi.csv" | cut -d, -f1)
echo "--- per-process check: a process outside any pod allocates $alloc MiB on $uuid0"
python3 - "$alloc" "$tmp/ready" <<'PY' &
import sys, time, torch
mib, ready = int(sys.argv[1]), sys.argv[2]
x = torch.empty(mib << 20, dtype=torch.uint8, device="cuda:0")
x.fill_(1)
torch.cuda.synchronize()
open(ready, "w").write("ok")
time.sleep(120)
PY
holder=$!
trap 'kill $holder 2>/dev/null; wait $holder 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 120); do
	[[ -s "$tmp/ready" ]] && break
	sleep 0.5
done
if [[ ! -s "$tmp/ready" ]]; then
	echo "gpu-check: the allocating process did not get ready" >&2
	exit 2
fi
sleep 1
nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits | tr -d ' ' >"$tmp/apps.csv"
nvidia-smi --query-gpu=uuid,memory.used --format=csv,noheader,nounits | tr -d ' ' | grep "^$uuid0," >"$tmp/used0.csv"
"$BIN" inventory --backend nvml --processes >"$tmp/inventory2.json" 2>"$tmp/processes.txt" || {
	cat "$tmp/processes.txt" >&2
	exit 1
}
echo "--- nvidia-smi --query-compute-apps (pid,gpu_uuid,used_memory MiB)"
cat "$tmp/apps.csv"
echo "--- node-agent inventory --processes"
cat "$tmp/processes.txt"
outside=$(awk -F'[:,]' -v u="$uuid0" '/"uuid"/ { gsub(/[ "]/, "", $2); cur = $2 } /"outsideUsedMiB"/ && cur == u { gsub(/ /, "", $2); print $2 }' "$tmp/inventory2.json")
used0=$(cut -d, -f2 "$tmp/used0.csv")
echo "--- $uuid0: memory.used $used0 MiB, agent outsideUsedMiB ${outside:-absent}"
fail=0
smi=$(awk -F, -v p="$holder" -v u="$uuid0" '$1 == p && $2 == u { print $3 }' "$tmp/apps.csv")
agent=$(awk -v p="pid=$holder" -v u="$uuid0" '$2 == u && $3 == p { sub("usedMiB=", "", $4); print $4 }' "$tmp/processes.txt")
if [[ -z "$smi" ]]; then
	echo "FAIL: nvidia-smi does not list pid $holder on $uuid0 (its PID namespace may differ from the driver's)"
	fail=1
elif [[ "$smi" != "$agent" ]]; then
	echo "FAIL: pid $holder: nvidia-smi $smi MiB, agent ${agent:-nothing}"
	fail=1
elif ((smi < alloc)); then
	echo "FAIL: pid $holder holds $smi MiB, less than the $alloc MiB it allocated"
	fail=1
fi
if [[ -z "$outside" ]]; then
	echo "FAIL: no outsideUsedMiB for $uuid0 (NVML could not list its processes)"
	fail=1
elif ((outside < alloc)); then
	echo "FAIL: outsideUsedMiB $outside < $alloc MiB held outside any pod"
	fail=1
else
	d=$((used0 - outside))
	d=${d#-}
	if ((d > tol)); then
		echo "FAIL: outsideUsedMiB $outside is more than $tol MiB from memory.used $used0 with no pod on the GPU"
		fail=1
	fi
fi
if ((fail)); then
	echo FAIL
	exit 1
fi
echo "PASS: pid $holder holds $smi MiB by both nvidia-smi and the agent; outsideUsedMiB $outside of memory.used $used0"

# Per-process utilisation (UTIL_CHECK=0 skips it): a process keeps the first
# GPU busy with matrix products; NVML's per-process samples
# (nvmlDeviceGetProcessUtilization), as the agent reads them, must give it a
# utilisation above 0, which the per-pod metric reports with source=process.
((${UTIL_CHECK:-1})) || exit 0
echo "--- per-process utilisation: a process keeps $uuid0 busy"
python3 - "$tmp/busy" <<'PY' &
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.bfloat16)
open(sys.argv[1], "w").write("ok")
end = time.time() + 30
while time.time() < end:
    a @ a
    torch.cuda.synchronize()
PY
busy=$!
trap 'kill $holder $busy 2>/dev/null; wait $holder $busy 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 120); do
	[[ -s "$tmp/busy" ]] && break
	sleep 0.5
done
sleep 3
nvidia-smi --query-gpu=uuid,utilization.gpu --format=csv,noheader,nounits | tr -d ' ' | grep "^$uuid0,"
"$BIN" inventory --backend nvml --processes >/dev/null 2>"$tmp/util.txt" || true
cat "$tmp/util.txt"
u=$(awk -v p="pid=$busy" -v g="$uuid0" '$2 == g && $3 == p { sub("util=", "", $6); sub("%", "", $6); print $6 }' "$tmp/util.txt")
if [[ -z "$u" || "$u" == unknown ]]; then
	echo "FAIL: no per-process utilisation for pid $busy (${u:-not listed}): the per-pod metric falls back to source=memory_share here"
	exit 1
elif ((u == 0)); then
	echo "FAIL: pid $busy kept the GPU busy but its utilisation reads 0%"
	exit 1
fi
echo "PASS: pid $busy at $u% by NVML's per-process samples"
