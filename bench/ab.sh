#!/usr/bin/env bash
# A/B of two vhostd checkouts (or one against itself with other generator
# flags) on one bdev, alternating fresh target processes: round r runs A,
# then B, each a new vhostd (engine on TARGET_CPU) with one controller, one
# vhostd-perf run (GEN_CPU, EVENT_IDX, hugepages) of RUNTIME s after RAMP s.
# Prints each round's IOPS, B/A and each side's engine busy time per request
# (thread_get_stats' engine_ threads over the run: the target's CPU cost, which
# IOPS alone hides when the target is not the bottleneck), then the medians and
# the median of the paired ratios. Fresh processes and pairs close in time, because this
# machine's speed moves by up to 2x over tens of seconds (host placement of
# the two vCPUs: SPDK's vhost shows the same steps), which single runs
# cannot tell from an effect.
#
#   bash bench/ab.sh ROUNDS QD DIR_A DIR_B
#
# DIR_A, DIR_B: checkouts with dist/ built (vhostd runs from there; the
# generator and the RPC client from this checkout). Environment, besides
# bench/lib/qsd.sh's (RUNTIME 2, RAMP 1, TARGET_CPU 1, GEN_CPU 0 here):
#   KIND=null|malloc|uring bdev (default null; 512 MiB, 512-byte blocks; uring: a
#                          file AB_FILE, default /var/tmp/vhostd-ab.img, written once)
#   RW=randread|randwrite  (default randread)
#   CTRLARGS='"packed_ring":true'  more vhost_create_blk_controller params (JSON members)
#   CTRLARGS_A, CTRLARGS_B the same for one side (e.g. packed against split:
#                          CTRLARGS_B='"packed_ring":true' PERFARGS_B=--packed)
#   PERFARGS=...           extra vhostd-perf flags for both (e.g. --packed)
#   PERFARGS_A, PERFARGS_B extra vhostd-perf flags for one side (e.g. PERFARGS_B=--inflight)
set -euo pipefail
if [ $# -ne 4 ]; then
  sed -n '2,24p' "$0" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-2}
RAMP=${RAMP:-1}
BENCH_NAME=ab
# shellcheck source=lib/qsd.sh
. "$ROOT/bench/lib/qsd.sh"
rounds=$1 qd=$2 dir_a=$(cd "$3" && pwd) dir_b=$(cd "$4" && pwd)
# vhostd-perf --hugepages puts its memory (rings and buffers: a few MiB) in 2 MiB pages.
if [ "$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)" -lt 8 ]; then
  echo "ab.sh: fewer than 8 free 2 MiB huge pages (vhostd-perf --hugepages needs them): echo 1024 > /proc/sys/vm/nr_hugepages" >&2
  exit 2
fi
kind=${KIND:-null}
rw=${RW:-randread}
blocks=$((512 * 2048))
ab_file=${AB_FILE:-/var/tmp/vhostd-ab.img}
if [ "$kind" = uring ] && [ "$(stat -c %s "$ab_file" 2>/dev/null || echo 0)" -ne $((blocks * 512)) ]; then
  # Written, not sparse: reads of holes would not reach the disk.
  dd if=/dev/urandom of="$ab_file" bs=1M count=512 status=none
fi

# busy_sec: the engine workers' busy seconds so far
busy_sec() {
  rpc thread_get_stats '{}' | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(r.threads.filter((t)=>t.name.startsWith("engine_")).reduce((a,t)=>a+t.busy,0)/r.tick_rate)})'
}

# one DIR PERF_FLAGS CTRL_MEMBERS: print one run's IOPS and the target's busy ns per request
one() {
  local VHOSTD_ROOT=$1 flags=$2 ctrl=$3
  # The main thread unpinned (only the engine on TARGET_CPU), as an operator runs it.
  start_vhostd "0-$(($(nproc) - 1))" --log-level warn
  if [ "$kind" = null ]; then
    rpc bdev_null_create "{\"name\":\"AB0\",\"num_blocks\":$blocks,\"block_size\":512}" >/dev/null
  elif [ "$kind" = uring ]; then
    rpc bdev_uring_create "{\"name\":\"AB0\",\"filename\":\"$ab_file\",\"block_size\":512}" >/dev/null
  else
    rpc bdev_malloc_create "{\"name\":\"AB0\",\"num_blocks\":$blocks,\"block_size\":512}" >/dev/null
  fi
  rpc vhost_create_blk_controller "{\"ctrlr\":\"ab0\",\"dev_name\":\"AB0\"${CTRLARGS:+,$CTRLARGS}${ctrl:+,$ctrl}}" >/dev/null
  local b0 b1 iops
  b0=$(busy_sec)
  # shellcheck disable=SC2086
  perf "$DIR/ab0" "$rw" "$qd" --event-idx --hugepages ${PERFARGS:-} $flags >"$DIR/p.json"
  b1=$(busy_sec)
  stop_target "$VPID"
  rm -f "$DIR/ab0"
  iops=$(iops <"$DIR/p.json")
  # Busy over the whole run (ramp included) per request of the whole run (IOPS of the measured part x its length).
  echo "$iops $(node -e "console.log(Math.round(($b1 - $b0) * 1e9 / ($iops * ($RUNTIME + $RAMP))))")"
}

echo "# round IOPS_A IOPS_B B/A busy-ns/req_A busy-ns/req_B ($kind $rw QD$qd; A=$dir_a ${PERFARGS_A:-} ${CTRLARGS_A:-}; B=$dir_b ${PERFARGS_B:-} ${CTRLARGS_B:-})"
as="" bs="" permille="" abusy="" bbusy=""
for r in $(seq "$rounds"); do
  read -r a ab < <(one "$dir_a" "${PERFARGS_A:-}" "${CTRLARGS_A:-}")
  read -r b bb < <(one "$dir_b" "${PERFARGS_B:-}" "${CTRLARGS_B:-}")
  echo "$r $a $b $(node -e "console.log(($b / $a).toFixed(3))") $ab $bb"
  as="$as $a" bs="$bs $b" permille="$permille $(node -e "console.log(Math.round(1000 * $b / $a))")" abusy="$abusy $ab" bbusy="$bbusy $bb"
done
echo "median A $(echo "$as" | median)  B $(echo "$bs" | median)  B/A (median of paired ratios) $(node -e "console.log(($(echo "$permille" | median) / 1000).toFixed(3))")"
echo "median busy ns/request A $(echo "$abusy" | median)  B $(echo "$bbusy" | median)"
