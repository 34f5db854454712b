#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Where a plain file's copy is a clone, its digest is read from the live file after the clone.
# A write in between must not be lost: here one through an XFS handle opened with no dentry in
# the store's tree (the file system was mounted again after the handle was taken), which moves
# neither mtime nor ctime (XFS invisible I/O) and raises no event on the store's directory.
# The writer waits until the live file's first extent is shared (the clone is made), then
# rewrites the last 4 KiB of the 256 MiB file, long before a hash reading from its start gets
# there. A snapshot that stillctl publishes must hold the bytes its manifest names: before or
# after that write, either is a state the file was in.
source "$(dirname "$0")/lib.sh"
python3 -c 'import ctypes; ctypes.CDLL("libhandle.so.1")' 2>/dev/null ||
  { echo "SKIP: libhandle.so.1 is missing (xfsprogs)" >&2; exit 77; }

mnt=$T_WORK/xfs
t_xfs "$mnt"
S=$mnt/store
mkdir -p "$S"
python3 -c 'import struct, sys; open(sys.argv[1], "wb").write(struct.pack("<Q", 1) * (256 << 17))' "$S/b"

# handle.py get FILE > HEX | write MNT HEX READY: the handle of FILE; or open it from HEX
# (MNT's handle registered first), make READY, wait until the file's first extent is shared,
# then write 4 KiB of generation 2 at its end.
cat >"$T_WORK/handle.py" <<'PY'
import ctypes, fcntl, os, struct, sys, time
h = ctypes.CDLL("libhandle.so.1", use_errno=True)
def fail(what): sys.exit("%s: %s" % (what, os.strerror(ctypes.get_errno())))
if sys.argv[1] == "get":
    p, l = ctypes.c_void_p(), ctypes.c_size_t()
    if h.path_to_handle(sys.argv[2].encode(), ctypes.byref(p), ctypes.byref(l)):
        fail("path_to_handle")
    print(ctypes.string_at(p, l.value).hex())
    sys.exit(0)
mnt, hexh, ready = sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4]
fp, fl = ctypes.c_void_p(), ctypes.c_size_t()
if h.path_to_fshandle(mnt.encode(), ctypes.byref(fp), ctypes.byref(fl)):
    fail("path_to_fshandle")
buf = ctypes.create_string_buffer(hexh, len(hexh))
fd = h.open_by_handle(buf, ctypes.c_size_t(len(hexh)), os.O_RDWR)
if fd < 0:
    fail("open_by_handle")
size = os.fstat(fd).st_size
def shared():
    fm = bytearray(32 + 56)  # struct fiemap + one fiemap_extent
    struct.pack_into("=QQIIII", fm, 0, 0, size, 0, 0, 1, 0)
    fcntl.ioctl(fd, 0xC020660B, fm)  # FS_IOC_FIEMAP
    n = struct.unpack_from("=I", fm, 20)[0]
    return n > 0 and struct.unpack_from("=I", fm, 32 + 40)[0] & 0x2000  # FIEMAP_EXTENT_SHARED
if shared():
    sys.exit("the file shares its extents already")
open(ready, "w").close()
while not shared():
    time.sleep(0.0005)
os.pwrite(fd, struct.pack("<Q", 2) * 512, size - 4096)
print("wrote", flush=True)
PY
hexh=$(python3 "$T_WORK/handle.py" get "$S/b")
# Mounted again, nothing of the store is in the dentry cache: the handle's dentry has no
# parent, and stays so when the capture looks the file up by its name.
umount "$mnt"
t_xfs_mount "$mnt"
t_bg python3 "$T_WORK/handle.py" write "$mnt" "$hexh" "$T_WORK/ready" >"$T_WORK/writer.out"
writer=${T_PIDS[-1]}
t_wait_for 30 test -e "$T_WORK/ready"
rc=0
"$STILLCTL" snapshot -q "$S" "$mnt/snap" 2>"$T_WORK/snap.err" || rc=$?
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/writer.out")"
T_PIDS=()
[ "$(cat "$T_WORK/writer.out")" = wrote ] || t_fail "the writer did not write"
[ "$rc" -eq 0 ] || t_fail "the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
last=$(tail -c 8 "$mnt/snap/b" | od -An -tu8 | tr -d ' ')
if ! "$STILLCTL" verify "$mnt/snap" >"$T_WORK/verify.out"; then
  cat "$T_WORK/verify.out" >&2
  t_fail "published (exit 0), but the snapshot does not verify: its copy of b (last block of generation $last) is not what its manifest's digest was read from"
fi
echo "# published, verified; b's last block is of generation $last"
umount "$mnt" || t_fail "cannot unmount"
