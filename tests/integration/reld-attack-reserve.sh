#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Writes through the mount cannot fill the blocks a file system keeps for root. ext4 lets a
# writer whose file-system uid is root (or who has CAP_SYS_RESOURCE, which also passes disk
# quotas) use its reserved blocks (mkfs -m, 5 %). The daemon wrote for its callers as root -
# through handles, and through passthrough backing files registered with root's credentials -
# so a user who may write the store filled it to the last block, and whatever of root's shares
# that file system (logs, databases) then failed. Now writes, fallocate and copy_file_range go
# as the caller, passthrough backing files are registered with the overflow ids, and the daemon
# gives up CAP_SYS_RESOURCE. On a small ext4 store with 5 % reserved, an unprivileged user:
# - writing through the mount (passthrough, and with -o no_passthrough, where fallocate is
#   tried too) stops where writing the store directly stops: root still finds its reserve.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v mkfs.ext4 >/dev/null || t_fail "mkfs.ext4 (e2fsprogs) is needed"
t_attacker sfrs
store=$T_WORK/store
mkdir -p "$store" "$T_WORK/mnt" "$T_WORK/mntnp"
truncate -s 64M "$T_WORK/fs.img"
mkfs.ext4 -q -m 5 "$T_WORK/fs.img" || t_fail "mkfs.ext4 failed"
mount -o loop "$T_WORK/fs.img" "$store" || t_fail "cannot mount a loop device"
T_MOUNTS+=("$store")
mkdir -m 1777 "$store/pub"
avail() { df --output=avail -k "$store" | tail -1 | tr -d ' '; }
# Root's reserve is there: root may still write 1 MiB when users may not.
reserve_kept() {
  local what=$1
  [ "$(avail)" -lt 1024 ] || t_fail "$what: the user left $(avail) KiB unwritten: the test proves nothing"
  dd if=/dev/zero of="$store/root-file" bs=1M count=1 conv=fsync status=none 2>/dev/null ||
    t_fail "$what: the user filled the blocks reserved for root"
  rm -f "$store/root-file" "$store"/pub/*
}
as_user dd if=/dev/zero of="$store/pub/direct" bs=1M count=100 status=none 2>/dev/null &&
  t_fail "setup: the user wrote 100 MiB into a 64 MiB file system"
reserve_kept "writing the store directly"

t_mount "$store" "$T_WORK/mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
t_log "passthrough: $(t_status "$T_WORK/mnt" passthrough)"
as_user dd if=/dev/zero of="$T_WORK/mnt/pub/big" bs=1M count=100 status=none 2>/dev/null &&
  t_fail "the user wrote 100 MiB into a 64 MiB file system through the mount"
reserve_kept "writing through the mount"
t_unmount "$T_WORK/mnt"

t_mount "$store" "$T_WORK/mntnp" -o auto_unmount,allow_other,no_passthrough,snapshot_max_age=3600,snapshot_linger=0
as_user dd if=/dev/zero of="$T_WORK/mntnp/pub/big" bs=1M count=100 status=none 2>/dev/null &&
  t_fail "the user wrote 100 MiB into a 64 MiB file system through the mount (no passthrough)"
reserve_kept "writing through the mount without passthrough"
as_user fallocate -l 100M "$T_WORK/mntnp/pub/fa" 2>/dev/null &&
  t_fail "the user allocated 100 MiB in a 64 MiB file system through the mount"
as_user fallocate -l "$(( $(avail) + 2048 ))K" "$T_WORK/mntnp/pub/fa2" 2>/dev/null &&
  t_fail "the user allocated past the space left to users, through the mount"
as_user dd if=/dev/zero of="$T_WORK/mntnp/pub/fill" bs=64K status=none 2>/dev/null || true
reserve_kept "fallocate through the mount"
t_unmount "$T_WORK/mntnp"
echo "PASS: writes through the mount leave root's reserved blocks alone"
