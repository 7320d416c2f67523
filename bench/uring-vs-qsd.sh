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
IMG=${IMG:-/dev/shm/vhostd-bench-uring.img}
BENCH_NAME=uring
# shellcheck source=lib/qsd.sh
. "$ROOT/bench/lib/qsd.sh"
remove_img() { [ -n "${KEEP_IMG:-}" ] || rm -f "$IMG"; }
CLEANUP_HOOKS+=(remove_img)

if [ ! -s "$IMG" ] || [ "$(stat -c %s "$IMG")" -ne $((SIZE_MIB << 20)) ]; then
  dd if=/dev/urandom of="$IMG" bs=1M count="$SIZE_MIB" status=none
fi

# --- vhostd ------------------------------------------------------------------
start_vhostd "$TARGET_CPU"
rpc bdev_uring_create "{\"name\":\"Uring0\",\"filename\":\"$IMG\"}" >/dev/null
rpc vhost_create_blk_controller '{"ctrlr":"vhost.0","dev_name":"Uring0"}' >/dev/null
perf "$DIR/vhost.0" randread 32 >"$DIR/vhostd.json"
stop_target "$VPID"

# --- qemu-storage-daemon -----------------------------------------------------
start_qsd "driver=file,filename=$IMG,node-name=f,aio=io_uring" f
perf "$DIR/qsd.sock" randread 32 >"$DIR/qsd.json"
stop_target "$QPID"

V=$(iops <"$DIR/vhostd.json")
Q=$(iops <"$DIR/qsd.json")
echo "== vhostd (bdev_uring, core $TARGET_CPU) =="; cat "$DIR/vhostd.json"; echo
echo "== qemu-storage-daemon (driver=file,aio=io_uring, core $TARGET_CPU) =="; cat "$DIR/qsd.json"; echo
echo "4k randread QD32, $IMG ($SIZE_MIB MiB), ${RUNTIME}s after ${RAMP}s ramp, generator on core $GEN_CPU"
# Which path vhostd's bdev took (O_DIRECT or not; inline on a memory file system).
grep -hE "bdev created|runs inline|O_DIRECT" "$DIR/vhostd.log" | sed 's/^/vhostd: /' || true
echo "load average: $(load_average)"
echo "vhostd IOPS: $V"
echo "QSD IOPS:    $Q"
echo "ratio vhostd/QSD: $(ratio "$V" "$Q")"
