#!/usr/bin/env bash
# A/B of two vhostd checkouts (or one against itself with other generator
# flags) on one bdev, alternating fresh target processes: round r runs A,
# then B, each a new vhostd on core 1 with one controller, one vhostd-perf
# run (core 0, EVENT_IDX, hugepages) of RUNTIME after a 1 s ramp. Prints
# each round's IOPS and B/A, then the medians and the median of the paired
# ratios. Fresh processes and pairs close in time, because this machine's
# speed moves by up to 2x over tens of seconds (host placement of the two
# vCPUs: SPDK's vhost shows the same steps), which single runs cannot tell
# from an effect.
#
#   bash bench/ab.sh ROUNDS QD DIR_A DIR_B
#
# DIR_A, DIR_B: checkouts with dist/ built (vhostd runs from there; the
# generator from this checkout). Environment:
#   KIND=null|malloc       bdev (default null; 512 MiB, 512-byte blocks)
#   RW=randread|randwrite  (default randread)
#   RUNTIME=2s             measured time per run
#   CTRLARGS=...           extra vhost_create_blk_controller flags (e.g. --packed-ring)
#   PERFARGS=...           extra vhostd-perf flags for both (e.g. --packed)
#   PERFARGS_A, PERFARGS_B extra vhostd-perf flags for one side (e.g. PERFARGS_B=--inflight)
#   SPDK_RPC_DIR           SPDK's rpc.py tree (default ../shared/peers/spdk-rpc)
set -euo pipefail
if [ $# -ne 4 ]; then
  sed -n '2,22p' "$0" >&2
  exit 2
fi
rounds=$1 qd=$2 dir_a=$(cd "$3" && pwd) dir_b=$(cd "$4" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
rpc_dir=${SPDK_RPC_DIR:-$here/../shared/peers/spdk-rpc}
rpc_py=$rpc_dir/scripts/rpc.py
[ -f "$rpc_py" ] || rpc_py=$rpc_dir/rpc.py
kind=${KIND:-null}
work=$(mktemp -d /tmp/vhostd-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT

# one DIR PERF_FLAGS: print one run's IOPS
one() {
  local dir=$1 flags=$2 d pid iops
  d=$(mktemp -d "$work/run.XXXXXX")
  (cd "$dir" && exec node bin/vhostd.js -m 0x2 -S "$d" -r "$d/rpc.sock" --log-level warn) >"$d/vhostd.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$d/rpc.sock" ] && break; sleep 0.05; done
  local rpc=(python3 "$rpc_py" -s "$d/rpc.sock")
  if [ "$kind" = null ]; then "${rpc[@]}" bdev_null_create AB0 512 512 >/dev/null; else "${rpc[@]}" bdev_malloc_create -b AB0 512 512 >/dev/null; fi
  # shellcheck disable=SC2086
  "${rpc[@]}" vhost_create_blk_controller ${CTRLARGS:-} ab0 AB0 >/dev/null
  # shellcheck disable=SC2086
  iops=$(node "$here/bin/vhostd-perf.js" --socket "$d/ab0" --rw "${RW:-randread}" --iodepth "$qd" --runtime "${RUNTIME:-2s}" --ramp 1s \
    --cpu 0 --event-idx --hugepages ${PERFARGS:-} $flags --json | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["iops"]))')
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$iops"
}

echo "# round IOPS_A IOPS_B B/A ($kind ${RW:-randread} QD$qd; A=$dir_a ${PERFARGS_A:-}; B=$dir_b ${PERFARGS_B:-})"
for r in $(seq "$rounds"); do
  a=$(one "$dir_a" "${PERFARGS_A:-}")
  b=$(one "$dir_b" "${PERFARGS_B:-}")
  echo "$r $a $b $(python3 -c "print(round($b / $a, 3))")"
done | tee "$work/rows"
python3 - "$work/rows" <<'EOF'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
a = [int(r[1]) for r in rows]; b = [int(r[2]) for r in rows]; q = [float(r[3]) for r in rows]
print(f"median A {st.median(a):.0f}  B {st.median(b):.0f}  B/A (median of paired ratios) {st.median(q):.3f}")
EOF
