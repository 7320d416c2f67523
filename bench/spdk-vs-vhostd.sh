#!/usr/bin/env bash
# vhostd side by side with SPDK's vhost app (and qemu-storage-daemon): a thin wrapper around
# `npm run bench -- --peer spdk` (bench/peer.ts holds the logic: targets, generators, busy time,
# idle cost, tables). Kept for the environment variables earlier runs used:
#
#   ROUNDS=2 RUNTIME=5 RAMP=1 BDEVS="null malloc" QDS="1 32 128" RWS="randread randwrite" \
#   GENS="perf bdevperf" TARGETS="vhostd spdk qsd" IDLE_SECS=5 IDLE_DEVS=16 SPDK_DIR=... bench/spdk-vs-vhostd.sh [more bench options]
#
# Needs root (hugepages) and `npx tsc -p .` first. Exit 3 with "not run: ..." when SPDK is not built.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ -f $ROOT/dist/bench/run.js ]] || { echo "build first: npx tsc -p ." >&2; exit 2; }
csv() { echo "$1" | tr -s ' ' ',' | sed 's/^,//; s/,$//'; }
exec node "$ROOT/dist/bench/run.js" --peer spdk \
  --runs "${ROUNDS:-2}" --runtime "${RUNTIME:-5}" --ramp "${RAMP:-1}" \
  --kinds "$(csv "${BDEVS:-null malloc}")" --qds "$(csv "${QDS:-1 32 128}")" --rws "$(csv "${RWS:-randread randwrite}")" \
  --gens "$(csv "${GENS:-perf bdevperf}")" --targets "$(csv "${TARGETS:-vhostd spdk qsd}")" \
  --idle-sec "${IDLE_SECS:-5}" --idle-devs "${IDLE_DEVS:-16}" "$@"
