#!/usr/bin/env bash
# Bench case of issue 4: vhostd with a bdev_uring vs qemu-storage-daemon with
# driver=file,aio=io_uring on the same /dev/shm file, same pinning (target on
# core $TARGET_CPU, the vhostd-perf generator on core $GEN_CPU), 4 KiB
# randread QD32, one queue, side by side in one run. Prints both reports and
# the IOPS ratio.
#
#   bench/uring-vs-qsd.sh            (after `npx tsc -p .`, `npx node-gyp rebuild` and `npx node-gyp rebuild -C bench/native`)
#   SIZE_MIB=1024 RUNTIME=10 RAMP=2 TARGET_CPU=1 GEN_CPU=0 bench/uring-vs-qsd.sh
#
# The file is filled with random data first, so reads touch real pages
# (reading holes of a sparse tmpfs file is a different, cheaper path).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-512}
RUNTIME=${RUNTIME:-10}
RAMP=${RAMP:-2}
TARGET_CPU=${TARGET_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
IMG=${IMG:-/dev/shm/vhostd-bench-uring.img}
DIR=$(mktemp -d /tmp/vhostd-bench-XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
  [ -n "${KEEP_IMG:-}" ] || rm -f "$IMG"
}
trap cleanup EXIT

if [ ! -s "$IMG" ] || [ "$(stat -c %s "$IMG")" -ne $((SIZE_MIB << 20)) ]; then
  dd if=/dev/urandom of="$IMG" bs=1M count="$SIZE_MIB" status=none
fi

perf() {
  node "$ROOT/dist/bench/perf/cli.js" --socket "$1" --rw randread --bs 4k --iodepth 32 --queues 1 \
    --runtime "$RUNTIME" --ramp "$RAMP" --cpu "$GEN_CPU" --json
}

wait_for() { for _ in $(seq 1 150); do [ -e "$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; return 1; }

iops() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(Math.round(r.iops ?? r.result?.iops ?? 0))})'; }

# --- vhostd ------------------------------------------------------------------
taskset -c "$TARGET_CPU" node "$ROOT/bin/vhostd.js" -m "[$TARGET_CPU]" -S "$DIR" -r "$DIR/rpc.sock" >"$DIR/vhostd.log" 2>&1 &
VPID=$!
PIDS+=("$VPID")
wait_for "$DIR/rpc.sock"
sleep 0.5
rpc() {
  node -e '
    const { RpcClient } = require(process.argv[1]);
    RpcClient.connect(process.argv[2]).then(async (c) => {
      try { console.log(JSON.stringify(await c.call(process.argv[3], JSON.parse(process.argv[4])))); process.exit(0); }
      catch (e) { console.error(process.argv[3] + ": " + e.message); process.exit(1); }
    });' "$ROOT/dist/reactor/rpc/client.js" "$DIR/rpc.sock" "$1" "$2"
}
rpc bdev_uring_create "{\"name\":\"Uring0\",\"filename\":\"$IMG\"}" >/dev/null
rpc vhost_create_blk_controller '{"ctrlr":"vhost.0","dev_name":"Uring0"}' >/dev/null
perf "$DIR/vhost.0" >"$DIR/vhostd.json"
kill "$VPID"; wait "$VPID" 2>/dev/null || true
PIDS=()

# --- qemu-storage-daemon -----------------------------------------------------
taskset -c "$TARGET_CPU" qemu-storage-daemon \
  --blockdev "driver=file,filename=$IMG,node-name=f,aio=io_uring" \
  --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$DIR/qsd.sock,num-queues=1,writable=on" \
  >"$DIR/qsd.log" 2>&1 &
QPID=$!
PIDS+=("$QPID")
wait_for "$DIR/qsd.sock"
perf "$DIR/qsd.sock" >"$DIR/qsd.json"
kill "$QPID"; wait "$QPID" 2>/dev/null || true
PIDS=()

V=$(iops <"$DIR/vhostd.json")
Q=$(iops <"$DIR/qsd.json")
echo "== vhostd (bdev_uring, core $TARGET_CPU) =="; cat "$DIR/vhostd.json"; echo
echo "== qemu-storage-daemon (driver=file,aio=io_uring, core $TARGET_CPU) =="; cat "$DIR/qsd.json"; echo
echo "4k randread QD32, $IMG ($SIZE_MIB MiB), ${RUNTIME}s after ${RAMP}s ramp, generator on core $GEN_CPU"
# Which path vhostd's bdev took (O_DIRECT or not; inline on a memory file system).
grep -hE "bdev created|runs inline|O_DIRECT" "$DIR/vhostd.log" | sed 's/^/vhostd: /' || true
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "vhostd IOPS: $V"
echo "QSD IOPS:    $Q"
node -e "console.log('ratio vhostd/QSD: ' + ($Q > 0 ? ($V / $Q).toFixed(2) : 'n/a'))"
