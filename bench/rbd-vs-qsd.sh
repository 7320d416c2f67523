#!/usr/bin/env bash
# Bench of issue 13: vhostd with a bdev_rbd vs qemu-storage-daemon with
# driver=rbd on the same image of the same single-node Ceph cluster
# (scripts/ceph-cluster.sh), same pinning (target on core $TARGET_CPU, the
# vhostd-perf generator on core $GEN_CPU), one queue, 4 KiB randread and
# randwrite at QD1 and QD32. Prints one line per case and a Markdown table.
#
#   bench/rbd-vs-qsd.sh     (after `npx tsc -p .` and `npm run build:native`;
#                            QSD's rbd driver is Debian's qemu-block-extra)
#   RUNTIME=10 RAMP=2 TARGET_CPU=1 GEN_CPU=0 SIZE_MIB=256 bench/rbd-vs-qsd.sh
#   RBD_CORE_MASK=0x1 bench/rbd-vs-qsd.sh   (vhostd's librbd threads on those
#                            cores instead of the polling core: bdev_rbd_register_cluster core_mask)
#   MODES="poll adaptive interrupt" bench/rbd-vs-qsd.sh   (a vhostd column per
#                            --poll-mode; default "poll adaptive")
#   BASE_ROOT=/tmp/old MODES=poll bench/rbd-vs-qsd.sh   (also a column per mode for
#                            the vhostd of another tree, built: before/after side by side,
#                            both run in turn within each case)
#   RWS=randread QDS=1 bench/rbd-vs-qsd.sh   (only these cases; default
#                            "randread randwrite" and "1 32")
#   THREADS=1 bench/rbd-vs-qsd.sh   (also prints, per run, the CPU time of the
#                            target's and the OSD's threads: bench/lib/thread-cpu.sh)
#   ROUNDS=3 bench/rbd-vs-qsd.sh   (each case runs every column and QSD in turn
#                            ROUNDS times; the table gives each column's median
#                            and the ratio of medians, stderr every round)
#
# The image is written in full first (rbd bench), so reads hit objects that
# exist. The cluster's daemons are not pinned: on a 2-core machine they share
# both cores with the target and the generator, as they would share a host.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# QSD loads driver=rbd from a module; without it QSD exits at start and every QSD run would fail obscurely.
if ! compgen -G "/usr/lib/*/qemu/block-rbd.so" >/dev/null; then
  echo "rbd-vs-qsd.sh: qemu-storage-daemon has no rbd driver here (install Debian's qemu-block-extra)" >&2
  exit 2
fi
SIZE_MIB=${SIZE_MIB:-256}
BENCH_NAME=rbd
# shellcheck source=lib/qsd.sh
. "$ROOT/bench/lib/qsd.sh"
CEPH="$DIR/ceph"
# shellcheck source=lib/thread-cpu.sh
. "$ROOT/bench/lib/thread-cpu.sh"
stop_ceph() { bash "$ROOT/scripts/ceph-cluster.sh" stop "$CEPH" >/dev/null 2>&1; }
CLEANUP_HOOKS+=(stop_ceph)

t0=$(date +%s.%N)
bash "$ROOT/scripts/ceph-cluster.sh" start "$CEPH" rbd "bench:$SIZE_MIB" >"$DIR/ceph.env"
t1=$(date +%s.%N)
CONF="$CEPH/ceph.conf"
rbd -c "$CONF" bench --io-type write --io-size 4M --io-total "${SIZE_MIB}M" --io-pattern seq rbd/bench >/dev/null

MODES=${MODES:-poll adaptive}
# Columns: each mode of this tree, then (BASE_ROOT) each mode of the other tree as "MODE@base".
COLS=""
for m in $MODES; do COLS="$COLS $m"; done
if [ -n "${BASE_ROOT:-}" ]; then for m in $MODES; do COLS="$COLS $m@base"; done; fi
# perf with THREADS=1: per-thread CPU of the target (TPID) and the OSD around the run, to stderr.
perf_threads() {  # label tpid socket rw qd → JSON on stdout
  local label=$1 tpid=$2; shift 2
  [ -n "${THREADS:-}" ] || { perf "$@"; return; }
  local osd engine=""; osd=$(cat "$CEPH/osd.0.pid")
  # vhostd's engine worker is a "node" thread like libuv's: named by its tid (framework_get_reactors).
  [ "$label" = QSD ] || engine=$(rpc framework_get_reactors '{}' | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).reactors[0].tid))')
  snap() { { thread_ticks target "$tpid"; thread_ticks osd "$osd"; } | sed "s/^target $engine [^ ]* /target $engine engine /"; }
  snap >"$DIR/t0"
  perf "$@" >"$DIR/p.json"
  snap >"$DIR/t1"
  local n; n=$(iops <"$DIR/p.json")
  echo "  threads, $label 4k $2 QD$3: $(thread_report "$DIR/t0" "$DIR/t1" "$((n * (RUNTIME + RAMP)))")" >&2
  cat "$DIR/p.json"
}
run_vhostd() {  # mode[@base] rw qd → iops
  local mode=${1%@base}; local VHOSTD_ROOT=$ROOT
  [ "$mode" = "$1" ] || VHOSTD_ROOT=$BASE_ROOT
  local col=$1; shift
  # With RBD_CORE_MASK the process may run there too (librados' threads take that mask); the engine is pinned by -m.
  local cpus="$TARGET_CPU"
  [ -z "${RBD_CORE_MASK:-}" ] || cpus="0-$(($(nproc) - 1))"
  start_vhostd "$cpus" --disable-cpumask-locks --poll-mode "$mode"
  local mask=""
  [ -z "${RBD_CORE_MASK:-}" ] || mask=",\"core_mask\":\"$RBD_CORE_MASK\""
  # rbd_cache off, as QEMU sets it for QSD's cache.direct=on: the same librbd path on both sides.
  rpc bdev_rbd_register_cluster "{\"name\":\"c\",\"config_file\":\"$CONF\",\"config_param\":{\"rbd_cache\":\"false\"}$mask}" >/dev/null
  rpc bdev_rbd_create '{"name":"Ceph0","pool_name":"rbd","rbd_name":"bench","block_size":512,"cluster_name":"c"}' >/dev/null
  rpc vhost_create_blk_controller '{"ctrlr":"vhost.0","dev_name":"Ceph0"}' >/dev/null
  perf_threads "vhostd $col" "$VPID" "$DIR/vhost.0" "$1" "$2" >"$DIR/v.json"
  stop_target "$VPID"
  rm -f "$DIR/vhost.0"
  iops <"$DIR/v.json"
}

run_qsd() {  # rw qd → iops
  start_qsd "driver=rbd,pool=rbd,image=bench,conf=$CONF,node-name=r,cache.direct=on" r
  perf_threads QSD "$QPID" "$DIR/qsd.sock" "$1" "$2" >"$DIR/q.json"
  stop_target "$QPID"
  iops <"$DIR/q.json"
}

echo "ceph cluster start: $(node -e "console.log(($t1 - $t0).toFixed(1))") s; image $SIZE_MIB MiB; ${RUNTIME}s after ${RAMP}s ramp; target core $TARGET_CPU, generator core $GEN_CPU" >&2
ROWS=()
HEAD="| case |"; SEP="|---|"
for m in $COLS; do HEAD="$HEAD vhostd $m IOPS |"; SEP="$SEP---|"; done
HEAD="$HEAD QSD (driver=rbd) IOPS |"; SEP="$SEP---|"
for m in $COLS; do HEAD="$HEAD $m/QSD |"; SEP="$SEP---|"; done
ROUNDS=${ROUNDS:-1}
for rw in ${RWS:-randread randwrite}; do
  for qd in ${QDS:-1 32}; do
    declare -A all=()
    for round in $(seq "$ROUNDS"); do
      for m in $COLS; do
        v=$(run_vhostd "$m" "$rw" "$qd"); all[$m]="${all[$m]:-} $v"
      done
      q=$(run_qsd "$rw" "$qd"); all[QSD]="${all[QSD]:-} $q"
      for m in $COLS; do
        v=${all[$m]##* }
        echo "4k $rw QD$qd round $round/$ROUNDS: vhostd ($m) $v IOPS, QSD $q IOPS, ratio $(ratio "$v" "$q")" >&2
      done
    done
    q=$(echo "${all[QSD]}" | median)
    row="| 4k $rw QD$qd |"; ratios=""
    for m in $COLS; do
      v=$(echo "${all[$m]}" | median)
      row="$row $v |"; ratios="$ratios $(ratio "$v" "$q") |"
    done
    ROWS+=("$row $q |$ratios")
    unset all
  done
done
echo "$HEAD"
echo "$SEP"
printf '%s\n' "${ROWS[@]}"
echo "load average: $(load_average)"
