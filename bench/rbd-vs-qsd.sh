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
#
# The image is written in full first (rbd bench), so reads hit objects that
# exist. The cluster's daemons are not pinned: on a 2-core machine they share
# both cores with the target and the generator, as they would share a host.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-256}
BENCH_NAME=rbd
# shellcheck source=lib/qsd.sh
. "$ROOT/bench/lib/qsd.sh"
CEPH="$DIR/ceph"
stop_ceph() { bash "$ROOT/scripts/ceph-cluster.sh" stop "$CEPH" >/dev/null 2>&1; }
CLEANUP_HOOKS+=(stop_ceph)

t0=$(date +%s.%N)
bash "$ROOT/scripts/ceph-cluster.sh" start "$CEPH" rbd "bench:$SIZE_MIB" >"$DIR/ceph.env"
t1=$(date +%s.%N)
CONF="$CEPH/ceph.conf"
rbd -c "$CONF" bench --io-type write --io-size 4M --io-total "${SIZE_MIB}M" --io-pattern seq rbd/bench >/dev/null

MODES=${MODES:-poll adaptive}
run_vhostd() {  # mode rw qd → iops
  local mode=$1; shift
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
  perf "$DIR/vhost.0" "$1" "$2" >"$DIR/v.json"
  stop_target "$VPID"
  rm -f "$DIR/vhost.0"
  iops <"$DIR/v.json"
}

run_qsd() {  # rw qd → iops
  start_qsd "driver=rbd,pool=rbd,image=bench,conf=$CONF,node-name=r,cache.direct=on" r
  perf "$DIR/qsd.sock" "$1" "$2" >"$DIR/q.json"
  stop_target "$QPID"
  iops <"$DIR/q.json"
}

echo "ceph cluster start: $(node -e "console.log(($t1 - $t0).toFixed(1))") s; image $SIZE_MIB MiB; ${RUNTIME}s after ${RAMP}s ramp; target core $TARGET_CPU, generator core $GEN_CPU" >&2
ROWS=()
HEAD="| case |"; SEP="|---|"
for m in $MODES; do HEAD="$HEAD vhostd $m IOPS |"; SEP="$SEP---|"; done
HEAD="$HEAD QSD (driver=rbd) IOPS |"; SEP="$SEP---|"
for m in $MODES; do HEAD="$HEAD $m/QSD |"; SEP="$SEP---|"; done
for rw in randread randwrite; do
  for qd in 1 32; do
    vs=()
    for m in $MODES; do vs+=("$(run_vhostd "$m" "$rw" "$qd")"); done
    q=$(run_qsd "$rw" "$qd")
    row="| 4k $rw QD$qd |"; ratios=""
    i=0
    for m in $MODES; do
      v=${vs[$i]}; i=$((i + 1))
      r=$(ratio "$v" "$q")
      echo "4k $rw QD$qd: vhostd ($m) $v IOPS, QSD $q IOPS, ratio $r" >&2
      row="$row $v |"; ratios="$ratios $r |"
    done
    ROWS+=("$row $q |$ratios")
  done
done
echo "$HEAD"
echo "$SEP"
printf '%s\n' "${ROWS[@]}"
echo "load average: $(load_average)"
