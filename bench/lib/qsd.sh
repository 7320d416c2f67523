# shellcheck shell=bash
# The common part of the bench scripts that put vhostd and
# qemu-storage-daemon side by side on one backend (bench/rbd-vs-qsd.sh,
# bench/uring-vs-qsd.sh): sourced after `set -euo pipefail` with ROOT set to
# the repository. It reads the common knobs from the environment
#
#   RUNTIME (10) RAMP (2)   seconds of each vhostd-perf run, after a ramp
#   TARGET_CPU (1)          core of the target (vhostd's engine, or QSD)
#   GEN_CPU (0)             core of the vhostd-perf generator
#
# makes DIR (a temporary directory: sockets, logs, JSON reports; removed at
# exit with every process started by start_vhostd / start_qsd, after the
# functions listed in CLEANUP_HOOKS ran), and defines:
#
#   start_vhostd CPUS ARGS...   vhostd on CPUS (taskset list), engine on TARGET_CPU,
#                               RPC at $DIR/rpc.sock, sockets in DIR; sets VPID
#                               (the tree at $VHOSTD_ROOT when set, e.g. an older
#                               build to compare with; default ROOT)
#   start_qsd BLOCKDEV NODE     qemu-storage-daemon on TARGET_CPU exporting NODE as
#                               vhost-user-blk at $DIR/qsd.sock (one queue); sets QPID
#   stop_target PID             stop a target started above and wait for it
#   rpc METHOD JSON             one call to $DIR/rpc.sock, the result on stdout
#   perf SOCKET RW QD [ARGS...] vhostd-perf, 4 KiB, one queue, JSON report on stdout
#                               (ARGS: more vhostd-perf flags, e.g. --event-idx)
#   iops < JSON                 the IOPS of a vhostd-perf report
#   wait_for PATH               wait up to 30 s for PATH to exist
#   ratio A B                   A/B with two decimals (n/a when B is 0)
#   median < NUMBERS            the median of whitespace-separated integers (the
#                               mean of the middle two, truncated, for an even count)
#   load_average                the 1, 5 and 15 minute load averages

: "${ROOT:?bench/lib/qsd.sh needs ROOT (the repository)}"
RUNTIME=${RUNTIME:-10}
RAMP=${RAMP:-2}
TARGET_CPU=${TARGET_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
DIR=$(mktemp -d "/tmp/vhostd-bench-${BENCH_NAME:-qsd}-XXXXXX")
PIDS=()
CLEANUP_HOOKS=()

bench_cleanup() {
  local p h
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for h in "${CLEANUP_HOOKS[@]}"; do "$h" || true; done
  rm -rf "$DIR"
}
trap bench_cleanup EXIT

wait_for() { for _ in $(seq 1 300); do [ -e "$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; return 1; }

iops() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(Math.round(r.iops ?? r.result?.iops ?? 0))})'; }

ratio() { node -e "console.log($2 > 0 ? ($1 / $2).toFixed(2) : 'n/a')"; }

load_average() { cut -d' ' -f1-3 /proc/loadavg; }

perf() {  # socket rw qd [vhostd-perf args...]
  local socket=$1 rw=$2 qd=$3; shift 3
  node "$ROOT/dist/bench/perf/cli.js" --socket "$socket" --rw "$rw" --bs 4k --iodepth "$qd" --queues 1 \
    --runtime "$RUNTIME" --ramp "$RAMP" --cpu "$GEN_CPU" --json "$@"
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }

rpc() {  # method json
  node -e '
    const { RpcClient } = require(process.argv[1]);
    RpcClient.connect(process.argv[2]).then(async (c) => {
      try { console.log(JSON.stringify(await c.call(process.argv[3], JSON.parse(process.argv[4])))); process.exit(0); }
      catch (e) { console.error(process.argv[3] + ": " + e.message); process.exit(1); }
    });' "$ROOT/dist/reactor/rpc/client.js" "$DIR/rpc.sock" "$1" "$2"
}

start_vhostd() {  # cpus args...
  local cpus=$1; shift
  rm -f "$DIR/rpc.sock"
  taskset -c "$cpus" node "${VHOSTD_ROOT:-$ROOT}/bin/vhostd.js" -m "[$TARGET_CPU]" -S "$DIR" -r "$DIR/rpc.sock" "$@" >"$DIR/vhostd.log" 2>&1 &
  VPID=$!
  PIDS=("$VPID")
  wait_for "$DIR/rpc.sock"
  sleep 0.5
}

start_qsd() {  # blockdev node-name
  rm -f "$DIR/qsd.sock"
  taskset -c "$TARGET_CPU" qemu-storage-daemon \
    --blockdev "$1" \
    --export "type=vhost-user-blk,id=e,node-name=$2,addr.type=unix,addr.path=$DIR/qsd.sock,num-queues=1,writable=on" \
    >"$DIR/qsd.log" 2>&1 &
  QPID=$!
  PIDS=("$QPID")
  wait_for "$DIR/qsd.sock"
}

stop_target() {  # pid
  kill "$1"; wait "$1" 2>/dev/null || true
  PIDS=()
}
