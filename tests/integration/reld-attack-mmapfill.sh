#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Pages a user writes through a shared mapping cannot fill the blocks a file system keeps for
# root. A file without a passthrough backing file (an executable, which any user may make of a
# file of theirs, a set-ID file, or every file with -o no_passthrough) is mapped from the
# mount's page cache, and the kernel writes its dirty pages back itself, in requests with no
# process and root's ids; the daemon wrote them as root, which ext4 lets use its reserved
# blocks (mkfs -m, 5 %). On a small ext4 store, an unprivileged user maps a 100 MiB file of
# theirs made executable and writes every page: the writes must stop where writing the store
# directly stops, leaving root its reserve.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v mkfs.ext4 >/dev/null || t_fail "mkfs.ext4 (e2fsprogs) is needed"
t_attacker sfmf
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
truncate -s 64M "$T_WORK/fs.img"
mkfs.ext4 -q -m 5 "$T_WORK/fs.img" || t_fail "mkfs.ext4 failed"
mount -o loop "$T_WORK/fs.img" "$store" || t_fail "cannot mount a loop device"
T_MOUNTS+=("$store")
mkdir -m 1777 "$store/pub"
avail() { df --output=avail -k "$store" | tail -1 | tr -d ' '; }

t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
t_log "passthrough: $(t_status "$mnt" passthrough)"
# The user's writes fail (ENOSPC at msync) once the users' share is gone: that is expected.
as_user /usr/bin/python3 - "$mnt/pub/big" <<'PY' || true
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o755)
size = 100 << 20
os.ftruncate(fd, size)
m = mmap.mmap(fd, size)
try:
    for off in range(0, size, 4096):
        m[off] = 1
    m.flush()
finally:
    m.close()
    os.close(fd)
PY
sync -f "$store"
[ "$(avail)" -lt 1024 ] || t_fail "the user left $(avail) KiB unwritten: the test proves nothing"
dd if=/dev/zero of="$store/root-file" bs=1M count=1 conv=fsync status=none 2>/dev/null ||
  t_fail "a user's writes through a mapping filled the blocks reserved for root"
t_unmount "$mnt"
echo "PASS: a user's writes through a mapping leave root's reserved blocks alone"
