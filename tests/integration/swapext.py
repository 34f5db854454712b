#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# swapext.py STORE DONORS N READY: make the files (generation 1) and their donors (2); make
# READY; wait until the capture has read one of the files and closed it; swap that one, then the
# others in order. swapext.py --one FILE DONOR GEN: make DONOR (generation GEN), swap it in.
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
