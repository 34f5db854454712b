#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# XFS_IOC_SWAPEXT (xfs_fsr's call) gives a file the extents, so the bytes, of another file of
# the same size. Any user who can write both may call it. It moves neither mtime nor ctime of
# the file and raises no IN_MODIFY (only the open and close of a descriptor, which the capture
# does not watch). An unprivileged writer rewrites a group of files f00..f19 (8 MiB each,
# generation 1) this way to generation 2, starting with the first file the capture has copied
# (cloned, hashed and closed: IN_CLOSE_NOWRITE), then the others in order. At every instant
# the store holds that first file at a generation at least as new as every other file's. A
# snapshot that stillctl publishes must verify, and must not hold the first file at 1 and
# another at 2. Store and snapshot share one reflink XFS.
source "$(dirname "$0")/lib.sh"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }
N=20

mnt=$T_WORK/xfs
t_xfs "$mnt"
S=$mnt/store D=$mnt/donors
mkdir -p "$S" "$D"
chmod 711 "$T_WORK"

cat >"$T_WORK/swapper.py" <<'PY'
# swapper.py STORE DONORS N READY: make the files (generation 1) and their donors (2); make
# READY; wait until the capture has read one of the files and closed it; swap that one, then the
# others in order. swapper.py --one FILE DONOR GEN: make DONOR (generation GEN), swap it in.
import ctypes, fcntl, os, struct, sys
SIZE = 8 << 20
def fill(path, gen):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", gen) * (SIZE // 8))
        os.fsync(f.fileno())
def swap(t, donor):
    d = os.open(donor, os.O_RDWR)
    st = os.fstat(t)
    bs = bytearray(136)  # struct xfs_bstat: only the size and the times are looked at
    struct.pack_into("=Q", bs, 0, st.st_ino)
    struct.pack_into("=q", bs, 32, st.st_size)
    struct.pack_into("=qi", bs, 56, st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9)
    struct.pack_into("=qi", bs, 72, st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9)
    sx = struct.pack("=qqqqq16s", 0, t, d, 0, st.st_size, b"") + bytes(bs)
    fcntl.ioctl(d, 0xC0C0586D, sx)  # XFS_IOC_SWAPEXT
    os.close(d)
if sys.argv[1] == "--one":
    fill(sys.argv[3], int(sys.argv[4]))
    swap(os.open(sys.argv[2], os.O_RDWR), sys.argv[3])
    sys.exit(0)
store, donors, n, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
names = ["f%02d" % i for i in range(n)]
for x in names:
    fill(os.path.join(store, x), 1)
    fill(os.path.join(donors, x), 2)
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
    swap(fds[x], os.path.join(donors, x))
print(first, flush=True)
PY
chown 65534:65534 "$S" "$D"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/swapper.py" "$S" "$D" "$N" "$D/ready" >"$T_WORK/first" 2>"$T_WORK/swapper.err" &
T_PIDS+=("$!")
writer=$!
t_wait_for 60 test -e "$D/ready"
rc=0
"$STILLCTL" snapshot -q "$S" "$mnt/snap" 2>"$T_WORK/snap.err" || rc=$?
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/swapper.err")"
T_PIDS=()
first=$(cat "$T_WORK/first")
[ -n "$first" ] || t_fail "the writer swapped nothing"
for f in "$S"/f*; do
  [ "$(od -An -tu8 -N8 "$f" | tr -d ' ')" = 2 ] || t_fail "the writer did not swap $f"
done
[ "$rc" -eq 0 ] || t_fail "the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
gens=""
for i in $(seq 0 $((N - 1))); do
  f=$(printf 'f%02d' "$i")
  gens+=" $f=$(od -An -tu8 -N8 "$mnt/snap/$f" | tr -d ' ')"
done
verified=yes
"$STILLCTL" verify "$mnt/snap" >"$T_WORK/verify.out" || verified=no
torn=no
[[ " $gens " == *" $first=1 "* && " $gens " == *"=2 "* ]] && torn=yes
echo "# first swapped: $first; snapshot:$gens; verifies: $verified"
[ "$torn" = no ] || t_fail "published (exit 0; stillctl verify: $verified), but the snapshot holds $first at generation 1 beside files at 2, a state the store never was in:$gens"
[ "$verified" = yes ] || { cat "$T_WORK/verify.out" >&2; t_fail "published (exit 0), but the snapshot does not verify (first swapped: $first;$gens)"; }

# The same swap between two snapshots: a later snapshot may share an earlier one's copy of a
# file only while the file is unchanged, which its stat no longer shows. Once the files are old
# enough for their stat to be trusted (2 s), a snapshot is taken on the XFS (clones) and one on
# the test's own file system (copies); then f05 gets generation 3 by a swap, and each is taken
# again with the first as --previous.
newest=$(stat -c %Z "$S"/f* | sort -n | tail -1)
t_wait_for 30 bash -c "(( \$(date +%s) >= $newest + 3 ))"
"$STILLCTL" snapshot -q "$S" "$mnt/base" || t_fail "the base snapshot on XFS failed"
"$STILLCTL" snapshot -q "$S" "$T_WORK/ebase" || t_fail "the base snapshot on $(df --output=fstype "$T_WORK" | tail -1) failed"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/swapper.py" --one "$S/f05" "$D/g05" 3 ||
  t_fail "the swap of f05 failed"
[ "$(od -An -tu8 -N8 "$S/f05" | tr -d ' ')" = 3 ] || t_fail "the swap did not give f05 generation 3"
for pair in "$mnt/base $mnt/next" "$T_WORK/ebase $T_WORK/enext"; do
  set -- $pair
  "$STILLCTL" snapshot -q --previous "$1" "$S" "$2" || t_fail "the snapshot after $1 failed"
  got=$(od -An -tu8 -N8 "$2/f05" | tr -d ' ')
  [ "$got" = 3 ] || t_fail "$2 (after $1) holds f05 at generation $got, the store at 3: the copy was shared from before the swap"
  "$STILLCTL" verify "$2" >/dev/null || t_fail "$2 does not verify"
done
umount "$mnt" || t_fail "cannot unmount"
