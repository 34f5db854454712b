#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# EXT4_IOC_MOVE_EXT (e4defrag's call; any user who may write both files) exchanges a file's
# blocks with a donor's, and the file (the donor of the call) reads as zeros afterwards: its
# blocks are marked unwritten. Neither its mtime nor its ctime moves, nor is IN_MODIFY raised;
# its extent map, which the capture compares (flags ignored), does move. Unless the call is
# made twice: the file is back on the very blocks it was on, still marked unwritten, so it
# reads as zeros, with its size, mtime and ctime as they were. An unprivileged writer clears
# a group f00..f19 (8 MiB each, stamped 1) this way (the first file the capture has copied and
# closed), then the others by plain writes of zeros. At every instant the store holds that
# first file cleared if any other is. A snapshot that stillctl publishes must not hold it at 1
# beside a cleared file; nor may a later one (--previous) share an earlier copy of a file
# cleared this way. Store and snapshots on a fresh ext4.
source "$(dirname "$0")/lib.sh"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }
N=20

mnt=$T_WORK/ext4
t_ext4 "$mnt" -b 4096
S=$mnt/store D=$mnt/donors
mkdir -p "$S" "$D"
chmod 711 "$T_WORK"

cat >"$T_WORK/aba.py" <<'PY'
# aba.py STORE DONORS N READY: make the files (generation 1); make READY; wait until the capture
# has read one of them and closed it; clear that one by two moves, then the others by plain
# writes of zeros. aba.py --one FILE DONOR: clear FILE by two moves. aba.py --probe A B: one
# move between two scratch files.
import ctypes, fcntl, os, struct, sys
SIZE = 8 << 20
def fill(path, gen):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", gen) * (SIZE // 8))
        os.fsync(f.fileno())  # allocated: the call moves extents only
def move(orig, donor):  # EXT4_IOC_MOVE_EXT: donor gets orig's blocks, orig donor's
    fcntl.ioctl(orig, 0xC028660F, bytearray(struct.pack("=IIQQQQ", 0, donor, 0, 0, SIZE // 4096, 0)))
def aba(t, donor):
    fill(donor, 9)
    d = os.open(donor, os.O_RDWR)
    was = os.fstat(t)
    move(d, t)
    move(d, t)  # t is on its own blocks again, unwritten
    os.posix_fadvise(t, 0, 0, os.POSIX_FADV_DONTNEED)
    now = os.fstat(t)
    os.close(d)
    if (now.st_mtime_ns, now.st_ctime_ns, now.st_size) != (was.st_mtime_ns, was.st_ctime_ns, was.st_size):
        sys.exit("the moves moved the file's stat")
    if os.pread(t, 8, 0) != bytes(8):
        sys.exit("the moves did not clear the file")
if sys.argv[1] == "--probe":
    fill(sys.argv[2], 1)
    fill(sys.argv[3], 2)
    move(os.open(sys.argv[2], os.O_RDWR), os.open(sys.argv[3], os.O_RDWR))
    sys.exit(0)
if sys.argv[1] == "--one":
    aba(os.open(sys.argv[2], os.O_RDWR), sys.argv[3])
    sys.exit(0)
store, donors, n, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
names = ["f%02d" % i for i in range(n)]
for x in names:
    fill(os.path.join(store, x), 1)
fds = {x: os.open(os.path.join(store, x), os.O_RDWR) for x in names}
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(0)
if ino < 0 or libc.inotify_add_watch(ino, store.encode(), 0x10) < 0:  # IN_CLOSE_NOWRITE
    sys.exit("inotify: %s" % os.strerror(ctypes.get_errno()))
open(ready, "w").close()
first = None
while first is None:  # the first of the files that the capture has read and closed
    data, i = os.read(ino, 65536), 0
    while i < len(data) and first is None:
        ln = struct.unpack_from("=iIII", data, i)[3]
        name = data[i + 16:i + 16 + ln].rstrip(b"\0").decode()
        first = name if name in fds else None
        i += 16 + ln
aba(fds[first], os.path.join(donors, first))
for x in names:
    if x != first:
        os.pwrite(fds[x], bytes(SIZE), 0)
print(first, flush=True)
PY
chown 65534:65534 "$S" "$D"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/aba.py" --probe "$D/probe.a" "$D/probe.b" 2>"$T_WORK/probe.err" ||
  { echo "SKIP: EXT4_IOC_MOVE_EXT refused: $(tail -n 1 "$T_WORK/probe.err")" >&2; exit 77; }
rm -f "$D/probe.a" "$D/probe.b"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/aba.py" "$S" "$D" "$N" "$D/ready" >"$T_WORK/first" 2>"$T_WORK/aba.err" &
T_PIDS+=("$!")
writer=$!
t_wait_for 60 test -e "$D/ready"
# Old enough for their stat to be trusted: a file changed just before the capture is read again.
newest=$(stat -c %Z "$S"/f* | sort -n | tail -1)
t_wait_for 30 bash -c "(( \$(date +%s) >= $newest + 3 ))"
rc=0
"$STILLCTL" snapshot -q "$S" "$mnt/snap" 2>"$T_WORK/snap.err" || rc=$?
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/aba.err")"
T_PIDS=()
first=$(cat "$T_WORK/first")
[ -n "$first" ] || t_fail "the writer wrote nothing"
for f in "$S"/f*; do
  [ "$(od -An -tu8 -N8 "$f" | tr -d ' ')" = 0 ] || t_fail "the writer did not clear $f"
done
[ "$rc" -eq 0 ] || t_fail "the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
gens=""
for i in $(seq 0 $((N - 1))); do
  f=$(printf 'f%02d' "$i")
  gens+=" $f=$(od -An -tu8 -N8 "$mnt/snap/$f" | tr -d ' ')"
done
verified=yes
"$STILLCTL" verify "$mnt/snap" >"$T_WORK/verify.out" || verified=no
echo "# first cleared: $first; snapshot:$gens; verifies: $verified"
[[ " $gens " == *" $first=1 "* && " $gens " == *"=0 "* ]] &&
  t_fail "published (exit 0; stillctl verify: $verified), but the snapshot holds $first at generation 1 beside cleared files, a state the store never was in:$gens"
[ "$verified" = yes ] || { cat "$T_WORK/verify.out" >&2; t_fail "published (exit 0), but the snapshot does not verify:$gens"; }

# Between two snapshots: the files at generation 3, once old enough for their stat to be
# trusted a base snapshot; then f05 cleared by two moves, and after it f06 by a plain write.
# The next snapshot (--previous base) must hold f05 cleared (not shared from the base at 3
# beside f06 cleared).
python3 -c 'import os, struct, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_WRONLY); os.pwrite(fd, struct.pack("<Q", 3) * (1 << 20), 0); os.fsync(fd)' "$S"/f*
newest=$(stat -c %Z "$S"/f* | sort -n | tail -1)
t_wait_for 30 bash -c "(( \$(date +%s) >= $newest + 3 ))"
"$STILLCTL" snapshot -q "$S" "$mnt/base" || t_fail "the base snapshot failed"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/aba.py" --one "$S/f05" "$D/g05" ||
  t_fail "the clearing of f05 failed"
python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, bytes(8 << 20), 0)' "$S/f06"
"$STILLCTL" snapshot -q --previous "$mnt/base" "$S" "$mnt/next" || t_fail "the snapshot after the base failed"
a=$(od -An -tu8 -N8 "$mnt/next/f05" | tr -d ' ') b=$(od -An -tu8 -N8 "$mnt/next/f06" | tr -d ' ')
verified=yes
"$STILLCTL" verify "$mnt/next" >/dev/null || verified=no
echo "# after the base: f05=$a f06=$b; verifies: $verified"
[ "$a" = 0 ] || t_fail "the snapshot after the base holds f05 at generation $a beside f06 cleared (the store: both cleared; verifies: $verified): its copy was shared from the base by its unchanged stat and extent map"
[ "$verified" = yes ] || t_fail "the snapshot after the base does not verify"
umount "$mnt" || t_fail "cannot unmount"
