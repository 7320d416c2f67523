#!/usr/bin/env bash
# build-guest.sh — builds and caches the Linux test guest used by the end-to-end
# tests (test/lib/guest.ts): a Debian cloud kernel and a base initramfs holding
# busybox, fio, the sg3-utils tools the SCSI tests use and nvme-cli (each with
# the libraries ldd lists) and the virtio/SCSI modules (NVMe is built into the
# cloud kernel).
#
# The result lives in <repo>/.cache/guest/<key>/ (override the root with
# VHOSTD_GUEST_CACHE), where <key> hashes this script plus the kernel package
# name and version, so editing this file or a new kernel rebuilds it. The last
# line printed on stdout is that directory, which holds:
#   vmlinuz              the kernel
#   initramfs.cpio.gz    the base initramfs (per-test scripts ride on top of it
#                        as a second, concatenated cpio.gz carrying /test.sh)
#   kernel-version       the kernel release (uname -r of the guest)
#
# The guest's /init mounts proc, sys and devtmpfs, loads the modules, runs
# /test.sh if present, prints "@@EXIT <rc>" on the console and powers off.
# Needs: apt-get, dpkg, busybox-static, fio, sg3-utils, nvme-cli, cpio, gzip,
# sha256sum, flock.
set -euo pipefail

SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
REPO_ROOT="$(cd "$(dirname "$SCRIPT_PATH")/.." && pwd)"
CACHE_ROOT="${VHOSTD_GUEST_CACHE:-$REPO_ROOT/.cache/guest}"
META_PKG="linux-image-cloud-amd64"
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk scsi_common scsi_mod sd_mod virtio_scsi"

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in apt-cache apt-get dpkg cpio gzip sha256sum flock ldd; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool'"
done
BUSYBOX="$(command -v busybox || true)"
[ -n "$BUSYBOX" ] || die "busybox not found (apt-get install busybox-static)"
# The guest has no libc of its own for busybox: insist on the static build.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; install busybox-static"
fi
FIO="$(command -v fio || true)"
[ -n "$FIO" ] || die "fio not found (apt-get install fio)"
# Guest tools besides fio: sg3-utils for the SCSI tests, nvme-cli for the NVMe tests.
SG_TOOLS="sg_inq sg_vpd sg_readcap sg_luns sg_turs sg_sync sg_unmap sg_write_same sg_modes sg_persist sg_raw sg_requests sg_opcodes sg_compare_and_write sg_verify sg_start"
TOOLS=""
for tool in $SG_TOOLS; do
  path="$(command -v "$tool" || true)"
  [ -n "$path" ] || die "$tool not found (apt-get install sg3-utils)"
  TOOLS="$TOOLS $path"
done
NVME="$(command -v nvme || true)"
[ -n "$NVME" ] || die "nvme not found (apt-get install nvme-cli)"
TOOLS="$TOOLS $NVME"

# The concrete kernel package the meta package depends on, and its version.
KPKG="$(apt-cache depends "$META_PKG" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')"
[ -n "$KPKG" ] || die "cannot resolve the kernel package of $META_PKG (run apt-get update)"
KVER_PKG="$(apt-cache policy "$KPKG" | awk '$1 == "Candidate:" { print $2; exit }')"
[ -n "$KVER_PKG" ] && [ "$KVER_PKG" != "(none)" ] || die "no candidate version for $KPKG"

KEY="$( { cat "$SCRIPT_PATH"; echo "$KPKG=$KVER_PKG"; } | sha256sum | cut -c1-16)"
OUT="$CACHE_ROOT/$KEY"

mkdir -p "$CACHE_ROOT"
# One builder at a time; the others wait and then find the finished cache.
exec 9>"$CACHE_ROOT/.lock"
flock 9

if [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ] && [ -f "$OUT/kernel-version" ]; then
  echo "$OUT"
  exit 0
fi

log "building guest $KEY ($KPKG $KVER_PKG)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/vhostd-guest.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# --- kernel ----------------------------------------------------------------
# apt-get download drops privileges to _apt when it can; give it a directory
# that user may write to.
chmod 0755 "$TMP"
mkdir -p "$TMP/deb"
chmod 0777 "$TMP/deb"
(cd "$TMP/deb" && apt-get download -q "$KPKG=$KVER_PKG" >&2)
DEB="$(ls "$TMP"/deb/*.deb | head -n1)"
[ -f "$DEB" ] || die "apt-get download produced no .deb"
dpkg -x "$DEB" "$TMP/kernel"
VMLINUZ="$(ls "$TMP"/kernel/boot/vmlinuz-* | head -n1)"
[ -f "$VMLINUZ" ] || die "no vmlinuz in $DEB"
KREL="${VMLINUZ##*/vmlinuz-}"
MODDIR="$TMP/kernel/lib/modules/$KREL"
[ -d "$MODDIR" ] || die "no module directory $MODDIR"

# --- root file system ------------------------------------------------------
ROOT="$TMP/root"
mkdir -p "$ROOT"/{bin,sbin,etc,proc,sys,dev,tmp,mnt,root,lib/modules,usr/bin,usr/sbin}
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  case "$applet" in busybox|init|linuxrc) continue ;; esac
  [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done

# fio, the tools, and every library ldd lists, at the same paths (the loader included).
for bin in "$FIO" $TOOLS; do
  cp "$bin" "$ROOT/usr/bin/$(basename "$bin")"
  ldd "$bin" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | sort -u | while read -r lib; do
    [ -e "$lib" ] || die "library $lib listed by ldd is missing"
    [ -e "$ROOT$lib" ] && continue
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
done
[ -e "$ROOT/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader not copied"

# Modules, in load order; those built into the kernel are skipped. Compressed
# modules are unpacked here since busybox insmod takes plain ELF.
: > "$ROOT/etc/modules"
for mod in $MODULES; do
  file="$(find "$MODDIR" -type f \( -name "$mod.ko" -o -name "$mod.ko.xz" -o -name "$mod.ko.zst" -o -name "$mod.ko.gz" \) | head -n1)"
  if [ -z "$file" ]; then
    if grep -q "/$mod.ko\$" "$MODDIR/modules.builtin" 2>/dev/null; then
      log "module $mod is built in"
      continue
    fi
    die "module $mod not found in $KPKG"
  fi
  case "$file" in
    *.ko.xz) xz -dc "$file" > "$ROOT/lib/modules/$mod.ko" ;;
    *.ko.zst) zstd -qdc "$file" > "$ROOT/lib/modules/$mod.ko" ;;
    *.ko.gz) gzip -dc "$file" > "$ROOT/lib/modules/$mod.ko" ;;
    *) cp "$file" "$ROOT/lib/modules/$mod.ko" ;;
  esac
  echo "$mod" >> "$ROOT/etc/modules"
done

cat > "$ROOT/init" <<'EOF'
#!/bin/busybox sh
# Test guest init: mount, load modules, run /test.sh, report, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# Keep kernel chatter off the console the markers are parsed from.
echo 1 > /proc/sys/kernel/printk

# No modules.dep: retry until every module loaded or a round makes no progress.
pending="$(cat /etc/modules)"
while [ -n "$pending" ]; do
  left=""
  for mod in $pending; do
    insmod "/lib/modules/$mod.ko" 2>/dev/null || left="$left $mod"
  done
  left="${left# }"
  if [ "$left" = "$pending" ]; then
    echo "@@MODULES-FAILED $left"
    break
  fi
  pending="$left"
done

echo "@@BOOTED $(uname -r) cpus=$(nproc)"
if [ -f /test.sh ]; then
  sh /test.sh < /dev/null
  rc=$?
else
  echo "@@NO-TEST"
  rc=127
fi
sync
echo "@@EXIT $rc"
poweroff -f
EOF
chmod 0755 "$ROOT/init"
echo "$KREL" > "$ROOT/etc/kernel-version"

# --- pack ------------------------------------------------------------------
STAGE="$CACHE_ROOT/.stage-$KEY.$$"
rm -rf "$STAGE"
mkdir -p "$STAGE"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 > "$STAGE/initramfs.cpio.gz"
cp "$VMLINUZ" "$STAGE/vmlinuz"
echo "$KREL" > "$STAGE/kernel-version"
echo "$KPKG $KVER_PKG" > "$STAGE/kernel-package"

# Drop older builds, then publish this one atomically.
for old in "$CACHE_ROOT"/*; do
  [ -d "$old" ] && [ "$old" != "$OUT" ] && rm -rf "$old"
done
rm -rf "$OUT"
mv "$STAGE" "$OUT"
log "guest ready in $OUT ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
