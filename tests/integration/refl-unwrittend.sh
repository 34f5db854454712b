#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The daemon, its store and its cache on one XFS (clones): a generation shares a file of the
# one before by its identity (stat and extent map, flags ignored). FICLONE shares no unwritten
# extent, so a preallocated file's blocks stay its own. An unprivileged writer gives
# preallocated f05 new bytes by swapping its extents to a donor (XFS_IOC_SWAPEXT), writing the
# donor in place (the blocks become written where they are) and swapping back: the file is on
# the very blocks it was on, with its size, mtime and ctime as they were. Then f06 by a plain
# write. The next generation must hold f05's new bytes beside f06's, not the earlier
# generation's f05 beside the new f06.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }

xfs=$T_WORK/xfs
t_xfs "$xfs"
S=$xfs/store D=$xfs/donors mnt=$T_WORK/mnt
mkdir -p "$S" "$D" "$mnt"
chmod 711 "$T_WORK"
chown 65534:65534 "$S" "$D"

cat >"$T_WORK/aba.py" <<'PY'
# aba.py fill DIR: f00..f09 at generation 1, f05 preallocated (0). aba.py aba FILE DONOR GEN: FILE at generation GEN
# by swap, write, swap. aba.py write FILE GEN: by a plain write.
import fcntl, os, struct, sys
SIZE = 4 << 20
def block(gen):
    return struct.pack("<Q", gen) * (SIZE // 8)
def fill(path, gen):
    with open(path, "wb") as f:
        f.write(block(gen))
        os.fsync(f.fileno())
def swap(t, d):
    st = os.fstat(t)
    bs = bytearray(136)  # struct xfs_bstat: only the size and the times are looked at
    struct.pack_into("=Q", bs, 0, st.st_ino)
    struct.pack_into("=q", bs, 32, st.st_size)
    struct.pack_into("=qi", bs, 56, st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9)
    struct.pack_into("=qi", bs, 72, st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9)
    sx = struct.pack("=qqqqq16s", 0, t, d, 0, st.st_size, b"") + bytes(bs)
    fcntl.ioctl(d, 0xC0C0586D, sx)  # XFS_IOC_SWAPEXT
if sys.argv[1] == "fill":
    for i in range(10):
        fill(os.path.join(sys.argv[2], "f%02d" % i), 1)
    fd = os.open(os.path.join(sys.argv[2], "f05"), os.O_RDWR | os.O_TRUNC)
    os.posix_fallocate(fd, 0, SIZE)
    os.fsync(fd)
elif sys.argv[1] == "aba":
    t = os.open(sys.argv[2], os.O_RDWR)
    fill(sys.argv[3], 0)
    d = os.open(sys.argv[3], os.O_RDWR)
    was = os.fstat(t)
    swap(t, d)
    os.pwrite(d, block(int(sys.argv[4])), 0)
    os.fsync(d)
    swap(t, d)
    now = os.fstat(t)
    if (now.st_mtime_ns, now.st_ctime_ns) != (was.st_mtime_ns, was.st_ctime_ns):
        sys.exit("the swaps moved the file's times")
else:
    fd = os.open(sys.argv[2], os.O_WRONLY)
    os.pwrite(fd, block(int(sys.argv[3])), 0)
PY
as_user() { setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/aba.py" "$@"; }
as_user fill "$S" || t_fail "cannot make the store"
newest=$(stat -c %Z "$S"/f* | sort -n | tail -1)
t_wait_for 30 bash -c "(( \$(date +%s) >= $newest + 3 ))"
mkdir -p "$xfs/cache"
t_mount "$S" "$mnt" -o "cache=$xfs/cache"
gen_of() { od -An -tu8 -N8 "$mnt/.snapshot/$1" | tr -d ' '; }
[ "$(gen_of f05)" = 0 ] || t_fail "the first generation does not hold f05 at 0"
as_user aba "$S/f05" "$D/g05" 3 || t_fail "the rewrite of f05 failed"
as_user write "$S/f06" 3 || t_fail "the write of f06 failed"
[ "$(od -An -tu8 -N8 "$S/f05" | tr -d ' ')" = 3 ] || t_fail "the rewrite did not give f05 generation 3"
"$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" || t_fail "stillctl refresh failed"
a=$(gen_of f05) b=$(gen_of f06)
echo "# after the rewrite: .snapshot holds f05=$a f06=$b ($(cat "$T_WORK/refresh.out"))"
[ "$a" = 3 ] || t_fail "the daemon's new generation holds f05 at $a beside f06 at $b (the store: 3 and 3): it shared the earlier generation's copy by the file's unchanged stat and extent map (flags ignored)"
t_unmount "$mnt"
umount "$xfs" || t_fail "cannot unmount"
