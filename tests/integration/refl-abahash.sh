#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A plain file cloned into a snapshot on its own XFS is hashed by reading the live file, and its
# extent map, written back, is compared with the one it had before the clone: a change between
# the clone and that check (XFS_IOC_SWAPEXT, which moves neither mtime nor ctime) makes it be
# copied again. Unless the map is back where it was by then: an unprivileged writer swaps the
# file (64 MiB, generation 1 throughout) with a donor at generation 2 once the capture has
# started reading it past the clone (its third IN_ACCESS), and back a few reads later. The
# clone holds generation 1 and the store is at 1 again, but the digest the capture recorded is
# of bytes read partly from the donor. A snapshot that stillctl publishes must verify.
source "$(dirname "$0")/lib.sh"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }

mnt=$T_WORK/xfs
t_xfs "$mnt"
S=$mnt/store D=$mnt/donors
mkdir -p "$S" "$D"
chmod 711 "$T_WORK"

cat >"$T_WORK/toggle.py" <<'PY'
# toggle.py FILE DONOR READY: make FILE (generation 1) and DONOR (2), make READY, wait for the
# capture's third read of FILE, swap, wait for a few more reads (or its close), swap back;
# nothing if it closes FILE first.
import ctypes, fcntl, os, struct, sys
SIZE = 64 << 20
def fill(path, gen):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", gen) * (SIZE // 8))
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
path, donor, ready = sys.argv[1:4]
fill(path, 1)
fill(donor, 2)
t, d = os.open(path, os.O_RDWR), os.open(donor, os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(0)
if ino < 0 or libc.inotify_add_watch(ino, path.encode(), 0x1 | 0x10) < 0:  # IN_ACCESS, IN_CLOSE_NOWRITE
    sys.exit("inotify: %s" % os.strerror(ctypes.get_errno()))
open(ready, "w").close()
reads, state = 0, 0
while state < 2:
    data, i = os.read(ino, 65536), 0
    while i < len(data):
        mask = struct.unpack_from("=iIII", data, i)[1]
        i += 16 + struct.unpack_from("=iIII", data, i)[3]
        reads += 1 if mask & 0x1 else 0
        if state == 0 and mask & 0x10:
            state = 2  # copied without reading it that often: nothing to swap under
            break
        if state == 0 and reads >= 3:
            swap(t, d)
            state, at = 1, reads
        elif state == 1 and (reads >= at + 8 or mask & 0x10):
            swap(t, d)
            state = 2
            break
print(reads, flush=True)
PY
chown 65534:65534 "$S" "$D"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/toggle.py" "$S/f" "$D/g" "$D/ready" >"$T_WORK/reads" 2>"$T_WORK/toggle.err" &
T_PIDS+=("$!")
writer=$!
t_wait_for 60 test -e "$D/ready"
# Old enough for its stat to be trusted: a file changed just before the capture is read again.
t_wait_for 30 bash -c "(( \$(date +%s) >= $(stat -c %Z "$S/f") + 3 ))"
rc=0
"$STILLCTL" snapshot -q "$S" "$mnt/snap" 2>"$T_WORK/snap.err" || rc=$?
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/toggle.err")"
T_PIDS=()
[ "$(od -An -tu8 -N8 "$S/f" | tr -d ' ')" = 1 ] || t_fail "the writer did not swap the file back"
[ "$rc" -eq 0 ] || t_fail "the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
gens=$(python3 -c 'import array, sys
g = set()
with open(sys.argv[1], "rb") as f:
    while b := f.read(1 << 20):
        g.update(array.array("Q", b))
print(" ".join(map(str, sorted(g))))' "$mnt/snap/f")
verified=yes
"$STILLCTL" verify "$mnt/snap" >"$T_WORK/verify.out" 2>&1 || verified=no
echo "# reads seen by the writer: $(cat "$T_WORK/reads"); generations in the snapshot's copy: $gens; verifies: $verified"
[ "$gens" = 1 ] || [ "$gens" = 2 ] || t_fail "the snapshot's copy mixes generations: $gens"
[ "$verified" = yes ] || { cat "$T_WORK/verify.out" >&2; t_fail "published (exit 0), but the snapshot does not verify: its digest is not of its copy's bytes (copy at generation $gens)"; }
umount "$mnt" || t_fail "cannot unmount"
