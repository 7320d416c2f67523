#!/usr/bin/env bash
# A throwaway single-node Ceph cluster from Debian's packages (ceph-mon,
# ceph-mgr, ceph-osd, ceph-common): one monitor, one manager, one BlueStore
# OSD over a sparse file, every pool of size 1, cephx on, everything
# (config, keyrings, data, logs, sockets, pid files) under one directory.
#
#   scripts/ceph-cluster.sh start DIR [POOL [IMAGE:SIZE_MIB ...]]
#   scripts/ceph-cluster.sh image DIR POOL IMAGE SIZE_MIB   (create one more image)
#   scripts/ceph-cluster.sh osd-stop DIR | osd-start DIR    (fault injection)
#   scripts/ceph-cluster.sh stop DIR                        (kill all, remove DIR)
#
# `start` prints shell assignments on stdout (CEPH_CONF, CEPH_KEYRING,
# CEPH_MON_HOST, CEPH_KEY, CEPH_FSID) once the pool is usable; the client
# user is client.admin. Ports: the monitor listens on 127.0.0.1 at a port
# picked free (msgr2 only); the OSD and manager take theirs from 6800-7300.
# Nothing outside DIR is written, so several clusters can run side by side.
set -euo pipefail

die() { echo "ceph-cluster.sh: $*" >&2; exit 1; }
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop|image|osd-stop|osd-start DIR ..."

conf="$dir/ceph.conf"
ceph_() { timeout 60 ceph -c "$conf" "$@"; }

pid_of() { [ -f "$dir/$1.pid" ] && cat "$dir/$1.pid" || true; }

# Stops a daemon by its pid file: SIGTERM, then SIGKILL after 10 s.
stop_daemon() {
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || { rm -f "$dir/$1.pid"; return 0; }
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/$1.pid"
}

start_osd() {
  ceph-osd -c "$conf" -i 0 --pid-file "$dir/osd.0.pid" -f >>"$dir/osd.0.out" 2>&1 &
  echo $! >"$dir/osd.0.pid"
}

wait_osd_up() {
  for _ in $(seq 600); do
    if ceph_ osd dump 2>/dev/null | grep -q '^osd.0 up'; then return 0; fi
    sleep 0.2
  done
  die "osd.0 did not come up (see $dir/osd.0.log)"
}

# Every placement group active+clean (after an OSD restart they peer first;
# I/O sent before that waits, or times out under rados_osd_op_timeout).
wait_pgs_clean() {
  for _ in $(seq 600); do
    if ceph_ pg stat 2>/dev/null | grep -Eq '^([0-9]+) pgs: \1 active\+clean'; then return 0; fi
    sleep 0.2
  done
  die "placement groups did not become active+clean (see $dir/osd.0.log)"
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

create_image() {  # pool image sizeMiB
  timeout 60 rbd -c "$conf" create --size "$3" --image-feature layering,exclusive-lock,object-map,fast-diff "$1/$2"
}

case "$cmd" in
start)
  pool=${3:-rbd}
  shift 3 2>/dev/null || shift $#
  [ ! -e "$dir" ] || [ -z "$(ls -A "$dir" 2>/dev/null)" ] || die "$dir exists and is not empty"
  for b in ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd; do
    command -v "$b" >/dev/null || die "$b not found (apt-get install ceph-mon ceph-mgr ceph-osd ceph-common)"
  done
  mkdir -p "$dir"/{mon,mgr,osd.0,run}
  dir=$(readlink -f "$dir"); conf="$dir/ceph.conf"
  fsid=$(cat /proc/sys/kernel/random/uuid)
  port=$(free_port)
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/\$name.keyring
run dir = $dir/run
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
ms bind msgr1 = false
ms bind ipv6 = false
[mon]
admin socket = $dir/run/\$name.asok
log file = $dir/\$name.log
mon data = $dir/mon
mon initial members = a
[mgr]
admin socket = $dir/run/\$name.asok
log file = $dir/\$name.log
mgr data = $dir/mgr
[osd]
admin socket = $dir/run/\$name.asok
log file = $dir/\$name.log
osd data = $dir/osd.0
osd objectstore = bluestore
bluestore block path = $dir/osd.0/block.file
bluestore block create = true
bluestore block size = $((8 * 1024 * 1024 * 1024))
bluestore fsck on mount = false
osd memory target = $((896 * 1024 * 1024))
bluestore cache autotune = false
bluestore cache size = $((128 * 1024 * 1024))
osd op num shards = 1
osd op num threads per shard = 2
EOF
  # Keys: mon. and client.admin (with every cap), then the monitor's store.
  ceph-authtool --create-keyring "$dir/mon.a.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$dir/mon.a.keyring" --import-keyring "$dir/client.admin.keyring" >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:$port]" --fsid "$fsid" "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.a.keyring" >/dev/null 2>&1 \
    || die "ceph-mon --mkfs failed"
  ceph-mon -c "$conf" -i a --pid-file "$dir/mon.a.pid" -f >>"$dir/mon.a.out" 2>&1 &
  echo $! >"$dir/mon.a.pid"
  for _ in $(seq 300); do ceph_ -s >/dev/null 2>&1 && break; sleep 0.1; done
  ceph_ -s >/dev/null 2>&1 || die "monitor did not answer (see $dir/mon.a.log)"

  # Manager.
  ceph_ auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' >"$dir/mgr.x.keyring"
  ceph-mgr -c "$conf" -i x --pid-file "$dir/mgr.x.pid" -f >>"$dir/mgr.x.out" 2>&1 &
  echo $! >"$dir/mgr.x.pid"

  # One BlueStore OSD over a sparse file.
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  ceph-authtool --create-keyring "$dir/osd.0.keyring" --gen-key -n osd.0 >/dev/null
  osd_key=$(ceph-authtool -p -n osd.0 "$dir/osd.0.keyring")
  echo "{\"cephx_secret\": \"$osd_key\"}" >"$dir/osd.0.json"
  id=$(ceph_ osd new "$osd_uuid" -i "$dir/osd.0.json")
  [ "$id" = 0 ] || die "ceph osd new gave id $id"
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/osd.0.out" 2>&1 \
    || die "ceph-osd --mkfs failed (see $dir/osd.0.out)"
  start_osd
  wait_osd_up

  ceph_ osd pool create "$pool" 8 8 >/dev/null 2>&1
  ceph_ osd pool set "$pool" size 1 --yes-i-really-mean-it >/dev/null 2>&1
  timeout 120 rbd -c "$conf" pool init "$pool"
  for spec in "$@"; do create_image "$pool" "${spec%%:*}" "${spec##*:}"; done

  key=$(ceph-authtool -p -n client.admin "$dir/client.admin.keyring")
  cat <<EOF
CEPH_CONF=$conf
CEPH_KEYRING=$dir/client.admin.keyring
CEPH_MON_HOST=127.0.0.1:$port
CEPH_KEY=$key
CEPH_FSID=$fsid
EOF
  ;;
image)
  [ $# -eq 5 ] || die "usage: $0 image DIR POOL IMAGE SIZE_MIB"
  create_image "$3" "$4" "$5"
  ;;
osd-stop)
  stop_daemon osd.0
  ;;
osd-start)
  [ -z "$(pid_of osd.0)" ] || die "osd.0 is running"
  start_osd
  wait_osd_up
  wait_pgs_clean
  ;;
stop)
  [ -d "$dir" ] || exit 0
  [ -f "$dir/ceph.conf" ] || die "$dir is not a cluster directory"
  stop_daemon osd.0
  stop_daemon mgr.x
  stop_daemon mon.a
  rm -rf "$dir"
  ;;
*)
  die "unknown command $cmd"
  ;;
esac
