#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# EXT4_IOC_MOVE_EXT (e4defrag's call) moves a file's blocks into a donor file's place. Any user
# who may write both files may call it. The donor's range reads as zeros afterwards (once its
# clean pages are dropped, which any reader may ask for): its bytes change, but neither its
# mtime nor its ctime moves, and no IN_MODIFY is raised. An unprivileged writer clears the first
# block (the header, stamped with the generation) of each of a group of files f00..f19 (8 MiB
# each, every 8 bytes stamped 1) this way, starting with the first file the capture has copied
# (read and closed: IN_CLOSE_NOWRITE), then the others in order. At every instant the store
# holds that first file cleared if any other file is. A snapshot that stillctl publishes must
# verify, and must not hold the first file at 1 beside a cleared one. Then the same between two
# snapshots: a file cleared after a snapshot must not be shared from it, by `stillctl snapshot
# --previous` nor by the daemon's next capture (`.snapshot` after `stillctl refresh`). Store and
# snapshots on a fresh ext4 (this machine's root file system refuses the call with EPERM). Each
# failure is reported; the test fails if any happened.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?STILLFS must point to the stillfs binary}"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }
N=20

mnt=$T_WORK/ext4
t_ext4 "$mnt" -b 4096
S=$mnt/store D=$mnt/origs
mkdir -p "$S" "$D"
chmod 711 "$T_WORK"

cat >"$T_WORK/mover.py" <<'PY'
# mover.py STORE ORIGS N READY: make the files (generation 1) and a one-block scratch file for
# each; make READY; wait until the capture has read one of the files and closed it; clear the
# first block of that one, then of the others in order. mover.py --one FILE ORIG: clear FILE's
# first block the same way.
import ctypes, fcntl, os, struct, sys
SIZE = 8 << 20
def fill(path, gen, size=SIZE):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", gen) * (size // 8))
        f.flush()
        os.fsync(f.fileno())  # allocated: the call moves extents only
def clear(donor_fd, orig):
    o = os.open(orig, os.O_RDWR)
    me = bytearray(struct.pack("=IIQQQQ", 0, donor_fd, 0, 0, 1, 0))
    try:
        fcntl.ioctl(o, 0xC028660F, me)  # EXT4_IOC_MOVE_EXT, orig -> donor
    except OSError as e:
        sys.exit("moving %s into %s: %s" % (orig, os.readlink("/proc/self/fd/%d" % donor_fd), e))
    os.close(o)
    # Its clean pages dropped, so that it reads as it now is on disk: a page a reader (the
    # capture) holds just then is not dropped, so ask until the cleared block is what reads.
    for _ in range(100000):
        os.posix_fadvise(donor_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if os.pread(donor_fd, 8, 0) == bytes(8):
            return
        os.sched_yield()
    sys.exit("%s still reads as before its clearing" % os.readlink("/proc/self/fd/%d" % donor_fd))
if sys.argv[1] == "--one":
    fill(sys.argv[3], 7, 4096)
    d = os.open(sys.argv[2], os.O_RDWR)
    clear(d, sys.argv[3])
    sys.exit(0)
store, origs, n, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
names = ["f%02d" % i for i in range(n)]
for x in names:
    fill(os.path.join(store, x), 1)
    fill(os.path.join(origs, x), 7, 4096)
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
for x in [first] + [x for x in names if x != first]:
    clear(fds[x], os.path.join(origs, x))
print(first, flush=True)
PY
chown 65534:65534 "$S" "$D"
# The call itself, tried once on two scratch files: a kernel without it (or refusing it) skips.
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 -c '
import fcntl, os, struct, sys
fds = []
for p in sys.argv[1:]:
    with open(p, "wb") as f:
        f.write(b"x" * 4096); f.flush(); os.fsync(f.fileno())
    fds.append(os.open(p, os.O_RDWR))
fcntl.ioctl(fds[0], 0xC028660F, bytearray(struct.pack("=IIQQQQ", 0, fds[1], 0, 0, 1, 0)))
' "$D/probe.a" "$D/probe.b" 2>"$T_WORK/probe.err" ||
  { echo "SKIP: EXT4_IOC_MOVE_EXT refused: $(tail -n 1 "$T_WORK/probe.err")" >&2; exit 77; }
rm -f "$D/probe.a" "$D/probe.b"
gen() { od -An -tu8 -N8 "$1" | tr -d ' '; }
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/mover.py" "$S" "$D" "$N" "$D/ready" >"$T_WORK/first" 2>"$T_WORK/mover.err" &
T_PIDS+=("$!")
writer=$!
t_wait_for 60 test -e "$D/ready"
rc=0
"$STILLCTL" snapshot -q "$S" "$mnt/snap" 2>"$T_WORK/snap.err" || rc=$?
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/mover.err")"
T_PIDS=()
first=$(cat "$T_WORK/first")
[ -n "$first" ] || t_fail "the writer cleared nothing"
for f in "$S"/f*; do
  [ "$(gen "$f")" = 0 ] || t_fail "the writer did not clear $f"
done
[ "$rc" -eq 0 ] || t_fail "the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
gens=""
for i in $(seq 0 $((N - 1))); do
  f=$(printf 'f%02d' "$i")
  gens+=" $f=$(gen "$mnt/snap/$f")"
done
verified=yes
"$STILLCTL" verify "$mnt/snap" >"$T_WORK/verify.out" || verified=no
torn=no
[[ " $gens " == *" $first=1 "* && " $gens " == *"=0 "* ]] && torn=yes
echo "# first cleared: $first; snapshot:$gens; verifies: $verified"
fails=()
[ "$torn" = no ] || fails+=("published (exit 0; stillctl verify: $verified), but the snapshot holds $first at generation 1 beside cleared files, a state the store never was in:$gens")
[ "$verified" = yes ] || { cat "$T_WORK/verify.out" >&2; fails+=("published (exit 0), but the snapshot does not verify (first cleared: $first;$gens)"); }

# Between two snapshots: once the files are old enough for their stat to be trusted, f05 is
# given generation 3 (written: its stat moves), a base snapshot is taken (and the daemon, mounted
# on the store, captures one: `stillctl refresh`), f05 is cleared, and the next snapshot is taken
# with the base as --previous (and the daemon captures again, its last capture its previous).
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 -c '
import os, struct, sys
with open(sys.argv[1], "r+b") as f:
    f.write(struct.pack("<Q", 3) * ((8 << 20) // 8)); os.fsync(f.fileno())' "$S/f05"
newest=$(stat -c %Z "$S"/f* | sort -n | tail -1)
t_wait_for 30 bash -c "(( \$(date +%s) >= $newest + 3 ))"
"$STILLCTL" snapshot -q "$S" "$mnt/base" || t_fail "the base snapshot failed"
[ "$(gen "$mnt/base/f05")" = 3 ] || t_fail "the base snapshot holds f05 at $(gen "$mnt/base/f05"), the store at 3"
fmnt=$T_WORK/fuse
mkdir -p "$fmnt"
t_mount "$S" "$fmnt" -o snapshot_max_age=3600,snapshot_linger=0
"$STILLCTL" refresh "$fmnt" >"$T_WORK/refresh.out" 2>&1 || t_fail "the daemon's first capture failed: $(cat "$T_WORK/refresh.out")"
[ "$(gen "$fmnt/.snapshot/f05")" = 3 ] || t_fail "the daemon's first capture holds f05 at $(gen "$fmnt/.snapshot/f05"), the store at 3"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/mover.py" --one "$S/f05" "$D/g05" ||
  t_fail "the clearing of f05 failed"
[ "$(gen "$S/f05")" = 0 ] || t_fail "the call did not clear f05"
"$STILLCTL" snapshot -q --previous "$mnt/base" "$S" "$mnt/next" || t_fail "the snapshot after the base failed"
got=$(gen "$mnt/next/f05")
"$STILLCTL" verify "$mnt/next" >/dev/null || t_fail "$mnt/next does not verify"
echo "# after the base: the store's f05 cleared, the snapshot's at $got"
[ "$got" = 0 ] || fails+=("the snapshot with --previous holds f05 at generation $got, the store cleared (0): the copy was shared from before the call (and it verifies)")
"$STILLCTL" refresh "$fmnt" >"$T_WORK/refresh.out" 2>&1 || t_fail "the daemon's second capture failed: $(cat "$T_WORK/refresh.out")"
got=$(gen "$fmnt/.snapshot/f05")
"$STILLCTL" verify "$fmnt/.snapshot" >/dev/null || t_fail "the daemon's .snapshot does not verify"
echo "# the daemon's next capture: f05 at $got"
[ "$got" = 0 ] || fails+=("the daemon's .snapshot holds f05 at generation $got after a capture taken after f05 was cleared (0): shared from its earlier capture (and it verifies)")
t_unmount "$fmnt"
umount "$mnt" || t_fail "cannot unmount"
for f in "${fails[@]}"; do echo "FAIL: $f" >&2; done
[ "${#fails[@]}" -eq 0 ]
