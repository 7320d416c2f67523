#!/usr/bin/env bash
# vhostd side by side with SPDK's own vhost app (issue #12 item 4/5): the same core for both targets
# (-m $TARGET_MASK, and taskset to that core for the whole process), run one after the other in one
# invocation, the order alternating per round; each serves a null and a malloc bdev as vhost-blk
# controllers, created through SPDK's own scripts/rpc.py (the same client for both targets). Load on
# the other core, two generators:
#   bdevperf  SPDK's bdevperf with its virtio-user initiator (bdev_virtio_attach_controller trtype user):
#             hugetlbfs-backed front-end memory, SPDK's own I/O path; latency percentiles from -l
#   perf      vhostd's own generator (bench/perf), with --hugepages (a MFD_HUGETLB memfd): SPDK's vhost
#             registers front-end memory with spdk_mem_register and refuses (closes at SET_MEM_TABLE)
#             memory that is not 2 MiB hugepage-backed
# Cases: 4 KiB randread/randwrite QD1/QD32 and 128 KiB sequential read QD32 (JOBS to change).
# Per case: IOPS, p50/p99 (µs), target busy seconds from thread_get_stats (sum over the target's
# threads, SPDK's and vhostd's own accounting) giving IOPS per busy core, and the target process's
# CPU time (/proc/PID/stat). Then the idle cost: each mode (SPDK's vhost app = poll; SPDK's interrupt
# mode = its examples/interrupt_tgt -E, v23.05's vhost app has no --interrupt-mode; vhostd poll /
# adaptive / interrupt) with $IDLE_DEVS controllers on 1 MiB malloc bdevs and no front-end, CPU over
# $IDLE_SECS.
#
#   bench/spdk-vs-vhostd.sh                      (after `npx tsc -p .` and the native builds)
#   ROUNDS=2 RUNTIME=5 RAMP=1 TARGET_CPU=1 GEN_CPU=0 GENS="bdevperf perf" BDEVS="null malloc" \
#   JOBS="randread:4096:1 randread:4096:32 randwrite:4096:1 randwrite:4096:32 read:131072:32" \
#   IDLE_MODES="spdk:poll spdk:interrupt vhostd:poll vhostd:adaptive vhostd:interrupt" IDLE_SECS=5 \
#   SPDK_DIR=/var/tmp/spdk-work/spdk OUT=results.jsonl bench/spdk-vs-vhostd.sh
#
# Needs root (hugepages for SPDK: NR_HUGEPAGES 2 MiB pages, hugetlbfs on /dev/hugepages). Prints the
# tables (bench/spdk-vs-vhostd-table.py) and leaves one JSON line per measurement in $OUT.
# Exit 3 with "not run: no SPDK build" when SPDK is not built.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SPDK=${SPDK_DIR:-/var/tmp/spdk-work/spdk}
ROUNDS=${ROUNDS:-2}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
TARGET_CPU=${TARGET_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
GENS=${GENS:-bdevperf perf}
TARGETS=${TARGETS:-spdk vhostd}
BDEVS=${BDEVS:-null malloc}
JOBS=${JOBS:-randread:4096:1 randread:4096:32 randwrite:4096:1 randwrite:4096:32 read:131072:32}
IDLE_MODES=${IDLE_MODES:-spdk:poll spdk:interrupt vhostd:poll vhostd:adaptive vhostd:interrupt}
IDLE_SECS=${IDLE_SECS:-5}
IDLE_DEVS=${IDLE_DEVS:-16}
NR_HUGEPAGES=${NR_HUGEPAGES:-1024}
OUT=${OUT:-$ROOT/bench/results/spdk-vs-vhostd-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
TARGET_MASK=$(printf '0x%x' $((1 << TARGET_CPU)))
GEN_MASK=$(printf '0x%x' $((1 << GEN_CPU)))

if [[ ! -x $SPDK/build/bin/vhost || ! -x $SPDK/build/examples/bdevperf || ! -f $SPDK/scripts/rpc.py ]]; then
  echo "not run: no SPDK build in $SPDK (build it with ../shared/peers/build-spdk.sh)"
  exit 3
fi
[[ -f $ROOT/dist/bench/perf/cli.js ]] || { echo "build first: npx tsc -p ." >&2; exit 2; }

DIR=$(mktemp -d /tmp/vhostd-spdk-bench-XXXXXX)
TPID=
cleanup() {
  if [[ -n $TPID ]]; then kill "$TPID" 2>/dev/null || true; wait "$TPID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT

# Hugepages for SPDK's vhost (-s 1024) and bdevperf (-s 512), as build-spdk.sh's smoke() sets them up.
if (($(cat /proc/sys/vm/nr_hugepages) < NR_HUGEPAGES)); then echo "$NR_HUGEPAGES" > /proc/sys/vm/nr_hugepages; fi
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

RPC=(python3 "$SPDK/scripts/rpc.py" -s "$DIR/t.sock")
CLK_TCK=$(getconf CLK_TCK)

# CPU seconds (user+system) of process $1 so far.
proc_cpu() { awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / t }' "/proc/$1/stat" 2> /dev/null || echo 0; }
# Busy seconds summed over the target's threads (thread_get_stats: busy ticks / tick_rate).
busy_s() {
  "${RPC[@]}" -t 10 thread_get_stats 2> /dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.6f" % (sum(t["busy"] for t in s["threads"]) / s["tick_rate"]))' 2> /dev/null || echo 0
}

# start_target KIND MODE: SPDK's vhost or vhostd on $TARGET_CPU, RPC socket $DIR/t.sock, sockets in $DIR/s.
start_target() {
  local kind=$1 mode=$2
  rm -rf "$DIR/s" "$DIR/t.sock"
  mkdir -p "$DIR/s"
  if [[ $kind == spdk ]]; then
    # v23.05's vhost app has no interrupt mode; its interrupt_tgt example is the vhost target that has
    # one (-E; vhost_blk/scsi with the interrupt-capable bdev modules: malloc, aio, ... but not null).
    local app=build/bin/vhost extra=()
    [[ $mode == interrupt ]] && app=build/examples/interrupt_tgt extra=(-E)
    (cd "$SPDK" && exec taskset -c "$TARGET_CPU" "$app" -m "$TARGET_MASK" -S "$DIR/s" -s 1024 -u \
      -r "$DIR/t.sock" --disable-cpumask-locks "${extra[@]}") > "$DIR/target.log" 2>&1 &
  else
    (cd "$ROOT" && exec taskset -c "$TARGET_CPU" node bin/vhostd.js -m "$TARGET_MASK" -S "$DIR/s" \
      -r "$DIR/t.sock" --disable-cpumask-locks --poll-mode "$mode") > "$DIR/target.log" 2>&1 &
  fi
  TPID=$!
  for _ in $(seq 150); do [[ -S $DIR/t.sock ]] && break; sleep 0.2; done
  [[ -S $DIR/t.sock ]] || { echo "$kind ($mode) did not start:"; tail -20 "$DIR/target.log"; stop_target; return 1; }
  "${RPC[@]}" -t 60 framework_wait_init > /dev/null || { echo "$kind: framework_wait_init failed"; stop_target; return 1; }
}

stop_target() {
  kill "$TPID" 2>/dev/null || true
  wait "$TPID" 2>/dev/null || true
  TPID=
}

make_bdevs() {
  "${RPC[@]}" bdev_null_create Null0 1024 4096 > /dev/null
  "${RPC[@]}" bdev_malloc_create -b Malloc0 128 4096 > /dev/null
  "${RPC[@]}" vhost_create_blk_controller --cpumask "$TARGET_MASK" vnull Null0 > /dev/null
  "${RPC[@]}" vhost_create_blk_controller --cpumask "$TARGET_MASK" vmalloc Malloc0 > /dev/null
}

# run_bdevperf SOCKET RW BS QD → prints "iops p50_us p99_us mean_us"
run_bdevperf() {
  local sock=$1 rw=$2 bs=$3 qd=$4
  cat > "$DIR/bp.json" <<EOF
{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_virtio_attach_controller","params":{"name":"VirtioBlk0","trtype":"user","traddr":"$sock","dev_type":"blk","vq_count":1,"vq_size":512}},{"method":"bdev_wait_for_examine"}]}]}
EOF
  local rc=0
  (cd "$SPDK" && timeout $((RUNTIME + 90)) build/examples/bdevperf -m "$GEN_MASK" -u -g -s 512 \
    --json "$DIR/bp.json" -q "$qd" -o "$bs" -w "$rw" -t "$RUNTIME" -l) > "$DIR/bp.out" 2>&1 || rc=$?
  tr -d '\r' < "$DIR/bp.out" | python3 -c '
import re, sys
text = sys.stdin.read()
tot = re.search(r"^\s*Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", text, re.M)
p = dict(re.findall(r"^\s*([\d.]+)%\s*:\s*([\d.]+)us", text, re.M))
if not tot or "50.00000" not in p or "99.00000" not in p:
    sys.exit(1)
print(tot.group(1), p["50.00000"], p["99.00000"], tot.group(5))
' || { echo "bdevperf failed (rc=$rc):" >&2; tail -30 "$DIR/bp.out" >&2; return 1; }
}

# run_perf SOCKET RW BS QD → prints "iops p50_us p99_us mean_us"
run_perf() {
  local sock=$1 rw=$2 bs=$3 qd=$4
  node "$ROOT/dist/bench/perf/cli.js" --socket "$sock" --rw "$rw" --bs "$bs" --iodepth "$qd" --queues 1 \
    --runtime "$RUNTIME" --ramp "$RAMP" --cpu "$GEN_CPU" --hugepages --json > "$DIR/perf.json" 2> "$DIR/perf.err" ||
    { echo "perf failed:" >&2; cat "$DIR/perf.err" >&2; return 1; }
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); l = r["latencyNs"]
print(r["iops"], l["p50"] / 1e3, l["p99"] / 1e3, l["mean"] / 1e3)' "$DIR/perf.json"
}

record() { python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])))' "$1" >> "$OUT"; }

one_target_round() {
  local round=$1 kind=$2
  start_target "$kind" poll || exit 1
  make_bdevs
  local gen bdev job rw bs qd sock res b0 b1 c0 c1 t0 t1
  for gen in $GENS; do
    for bdev in $BDEVS; do
      sock=$DIR/s/v$bdev
      for job in $JOBS; do
        IFS=: read -r rw bs qd <<< "$job"
        b0=$(busy_s); c0=$(proc_cpu "$TPID"); t0=$(date +%s.%N)
        if [[ $gen == bdevperf ]]; then res=$(run_bdevperf "$sock" "$rw" "$bs" "$qd") || res=
        else res=$(run_perf "$sock" "$rw" "$bs" "$qd") || res=; fi
        t1=$(date +%s.%N); c1=$(proc_cpu "$TPID"); b1=$(busy_s)
        if [[ -z $res ]]; then
          record "{\"kind\":\"case\",\"round\":$round,\"target\":\"$kind\",\"gen\":\"$gen\",\"bdev\":\"$bdev\",\"rw\":\"$rw\",\"bs\":$bs,\"qd\":$qd,\"failed\":true}"
          echo "round $round $kind $gen $bdev $rw $bs QD$qd: FAILED"
          continue
        fi
        read -r iops p50 p99 mean <<< "$res"
        local load; load=$(cut -d' ' -f1 /proc/loadavg)
        record "{\"kind\":\"case\",\"round\":$round,\"target\":\"$kind\",\"gen\":\"$gen\",\"bdev\":\"$bdev\",\"rw\":\"$rw\",\"bs\":$bs,\"qd\":$qd,\"iops\":$iops,\"p50_us\":$p50,\"p99_us\":$p99,\"mean_us\":$mean,\"runtime_s\":$RUNTIME,\"busy_s\":$(python3 -c "print($b1-$b0)"),\"cpu_s\":$(python3 -c "print($c1-$c0)"),\"wall_s\":$(python3 -c "print($t1-$t0)"),\"load\":$load}"
        printf 'round %s %-6s %-8s %-6s %-9s %6s QD%-3s %10.0f IOPS  p50 %7.2f  p99 %7.2f us  (load %s)\n' \
          "$round" "$kind" "$gen" "$bdev" "$rw" "$bs" "$qd" "$iops" "$p50" "$p99" "$load"
      done
    done
  done
  stop_target
}

echo "== cases: targets on core $TARGET_CPU ($TARGET_MASK), generators on core $GEN_CPU; ${RUNTIME}s per case, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  order=$TARGETS
  ((round % 2 == 0)) && order=$(echo "$TARGETS" | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}')
  for kind in $order; do one_target_round "$round" "$kind"; done
done

echo "== idle: $IDLE_DEVS controllers on malloc bdevs, no front-end, CPU over ${IDLE_SECS}s"
for m in $IDLE_MODES; do
  kind=${m%%:*} mode=${m#*:}
  if ! start_target "$kind" "$mode"; then echo "$m: did not start"; continue; fi
  for i in $(seq 0 $((IDLE_DEVS - 1))); do
    "${RPC[@]}" bdev_malloc_create -b "Idle$i" 1 4096 > /dev/null
    "${RPC[@]}" vhost_create_blk_controller --cpumask "$TARGET_MASK" "idle$i" "Idle$i" > /dev/null
  done
  sleep 2
  c0=$(proc_cpu "$TPID"); b0=$(busy_s); t0=$(date +%s.%N)
  sleep "$IDLE_SECS"
  c1=$(proc_cpu "$TPID"); b1=$(busy_s); t1=$(date +%s.%N)
  pct=$(python3 -c "print(round(100 * ($c1 - $c0) / ($t1 - $t0), 2))")
  record "{\"kind\":\"idle\",\"target\":\"$kind\",\"mode\":\"$mode\",\"devs\":$IDLE_DEVS,\"cpu_pct\":$pct,\"busy_s\":$(python3 -c "print($b1-$b0)"),\"wall_s\":$(python3 -c "print($t1-$t0)"),\"load\":$(cut -d' ' -f1 /proc/loadavg)}"
  printf 'idle %-6s %-9s %5.2f %% of a core\n' "$kind" "$mode" "$pct"
  grep -iE 'interrupt' "$DIR/target.log" | head -3 | sed "s/^/  $kind: /" || true
  stop_target
done

echo "== results: $OUT"
python3 "$ROOT/bench/spdk-vs-vhostd-table.py" "$OUT"
