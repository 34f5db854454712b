#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# On XFS a plain file's extent map, flags ignored, tells the capture whether the file changed
# without moving its times (XFS_IOC_SWAPEXT); a clone shares the file's blocks, so a write
# to them lands elsewhere and moves the map. But FICLONE shares no unwritten (preallocated)
# extent: the clone gets a hole there, and the live file's blocks stay its own. f00 is
# preallocated (fallocate: 8 MiB of unwritten extents, reading as zeros, generation 0); f01..f19
# are written (generation 1). Once the capture has cloned f00 and closed it, an unprivileged
# writer swaps f00's extents to a donor, writes the donor in place (the unwritten blocks become
# written where they are) and swaps back: f00 lies on the very blocks it did, only their
# unwritten flag gone, with generation 2 in them and its size, mtime and ctime as they were.
# Then f01..f19 get 2 by plain writes. At every instant the store holds f00 at 2 if any other
# file is at 2. A snapshot that stillctl publishes on the store's XFS must not hold f00 at 0
# beside files at 2; nor may a later one share an earlier copy of a file rewritten this way.
source "$(dirname "$0")/lib.sh"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }
N=20

mnt=$T_WORK/xfs
t_xfs "$mnt"
S=$mnt/store D=$mnt/donors
mkdir -p "$S" "$D"
chmod 711 "$T_WORK"

cat >"$T_WORK/unw.py" <<'PY'
# unw.py STORE DONORS N READY: make f00 (preallocated) and the others (generation 1); make
# READY; once the capture has read f00 and closed it, give f00 generation 2 by swap, write,
# swap, then the others by plain writes. unw.py --make FILE: a preallocated file.
# unw.py --one FILE DONOR GEN: give FILE generation GEN by swap, write, swap.
import ctypes, fcntl, os, struct, sys
SIZE = 8 << 20
def block(gen):
    return struct.pack("<Q", gen) * (SIZE // 8)
def fill(path, gen):
    with open(path, "wb") as f:
        f.write(block(gen))
        os.fsync(f.fileno())
def prealloc(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.posix_fallocate(fd, 0, SIZE)
    os.fsync(fd)
    os.close(fd)
def swap(t, d):
    st = os.fstat(t)
    bs = bytearray(136)  # struct xfs_bstat: only the size and the times are looked at
    struct.pack_into("=Q", bs, 0, st.st_ino)
    struct.pack_into("=q", bs, 32, st.st_size)
    struct.pack_into("=qi", bs, 56, st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9)
    struct.pack_into("=qi", bs, 72, st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9)
    sx = struct.pack("=qqqqq16s", 0, t, d, 0, st.st_size, b"") + bytes(bs)
    fcntl.ioctl(d, 0xC0C0586D, sx)  # XFS_IOC_SWAPEXT
def aba(t, donor, gen):
    fill(donor, 9)
    d = os.open(donor, os.O_RDWR)
    was = os.fstat(t)
    swap(t, d)                       # the donor holds the file's blocks now
    os.pwrite(d, block(gen), 0)      # where they are: no clone shares them
    os.fsync(d)
    swap(t, d)                       # and the file has them back
    now = os.fstat(t)
    os.close(d)
    if (now.st_mtime_ns, now.st_ctime_ns, now.st_size) != (was.st_mtime_ns, was.st_ctime_ns, was.st_size):
        sys.exit("the swaps moved the file's stat")
if sys.argv[1] == "--make":
    prealloc(sys.argv[2])
    sys.exit(0)
if sys.argv[1] == "--one":
    aba(os.open(sys.argv[2], os.O_RDWR), sys.argv[3], int(sys.argv[4]))
    sys.exit(0)
store, donors, n, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
names = ["f%02d" % i for i in range(n)]
prealloc(os.path.join(store, names[0]))
for x in names[1:]:
    fill(os.path.join(store, x), 1)
fds = {x: os.open(os.path.join(store, x), os.O_RDWR) for x in names}
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(0)
if ino < 0 or libc.inotify_add_watch(ino, store.encode(), 0x10) < 0:  # IN_CLOSE_NOWRITE
    sys.exit("inotify: %s" % os.strerror(ctypes.get_errno()))
open(ready, "w").close()
seen = False
while not seen:  # the capture has read f00 and closed it
    data, i = os.read(ino, 65536), 0
    while i < len(data):
        ln = struct.unpack_from("=iIII", data, i)[3]
        seen = seen or data[i + 16:i + 16 + ln].rstrip(b"\0").decode() == names[0]
        i += 16 + ln
aba(fds[names[0]], os.path.join(donors, names[0]), 2)
for x in names[1:]:
    os.pwrite(fds[x], block(2), 0)
PY
chown 65534:65534 "$S" "$D"
as_user() { setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/unw.py" "$@"; }
as_user "$S" "$D" "$N" "$D/ready" 2>"$T_WORK/unw.err" &
T_PIDS+=("$!")
writer=$!
t_wait_for 60 test -e "$D/ready"
# Old enough for their stat to be trusted: a file changed just before the capture is read again.
newest=$(stat -c %Z "$S"/f* | sort -n | tail -1)
t_wait_for 30 bash -c "(( \$(date +%s) >= $newest + 3 ))"
rc=0
"$STILLCTL" snapshot -q "$S" "$mnt/snap" 2>"$T_WORK/snap.err" || rc=$?
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/unw.err")"
T_PIDS=()
for f in "$S"/f*; do
  [ "$(od -An -tu8 -N8 "$f" | tr -d ' ')" = 2 ] || t_fail "the writer did not give $f generation 2"
done
[ "$rc" -eq 0 ] || t_fail "the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
gens=""
for i in $(seq 0 $((N - 1))); do
  f=$(printf 'f%02d' "$i")
  gens+=" $f=$(od -An -tu8 -N8 "$mnt/snap/$f" | tr -d ' ')"
done
verified=yes
"$STILLCTL" verify "$mnt/snap" >"$T_WORK/verify.out" || verified=no
echo "# snapshot:$gens; verifies: $verified"
[[ " $gens " == *" f00=0 "* && " $gens " == *"=2 "* ]] &&
  t_fail "published (exit 0; stillctl verify: $verified), but the snapshot holds f00 at generation 0 (preallocated) beside files at 2, a state the store never was in:$gens"
[ "$verified" = yes ] || { cat "$T_WORK/verify.out" >&2; t_fail "published (exit 0), but the snapshot does not verify:$gens"; }

# Between two snapshots on the store's XFS: g is preallocated; once old enough, a base
# snapshot; then g gets generation 3 by swap, write, swap, and after it f01 by a plain write.
# The next snapshot (--previous base) must hold g at 3, not the base's copy beside f01 at 3.
as_user --make "$S/g" || t_fail "cannot make g"
t_wait_for 30 bash -c "(( \$(date +%s) >= $(stat -c %Z "$S/g") + 3 ))"
"$STILLCTL" snapshot -q "$S" "$mnt/base" || t_fail "the base snapshot failed"
as_user --one "$S/g" "$D/gg" 3 || t_fail "the rewrite of g failed"
[ "$(od -An -tu8 -N8 "$S/g" | tr -d ' ')" = 3 ] || t_fail "the rewrite did not give g generation 3"
python3 -c 'import os, struct, sys
fd = os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, struct.pack("<Q", 3) * (1 << 20), 0)' "$S/f01"
"$STILLCTL" snapshot -q --previous "$mnt/base" "$S" "$mnt/next" || t_fail "the snapshot after the base failed"
a=$(od -An -tu8 -N8 "$mnt/next/g" | tr -d ' ') b=$(od -An -tu8 -N8 "$mnt/next/f01" | tr -d ' ')
verified=yes
"$STILLCTL" verify "$mnt/next" >/dev/null || verified=no
echo "# after the base: g=$a f01=$b; verifies: $verified"
[ "$a" = 3 ] || t_fail "the snapshot after the base holds g at generation $a beside f01 at $b (the store: 3 and 3; verifies: $verified): its copy was shared from the base by its unchanged stat and extent map"
[ "$verified" = yes ] || t_fail "the snapshot after the base does not verify"
umount "$mnt" || t_fail "cannot unmount"
