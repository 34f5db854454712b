#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# The writer of cut-mmap.sh and cut-mountwriter.sh: N files of 1 MiB in STORE, mapped shared,
# stamped with the same version at their heads in order, every millisecond for 2 s; READY is
# made once version READY_AT is stamped; then it prints the last version and waits for STOP.
# usage: cut-mmap-writer.py STORE N READY STOP READY_AT
import mmap, os, struct, sys, time

store, n, ready, stop, ready_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
maps = []
for i in range(n):
    fd = os.open(os.path.join(store, "f%02d.bin" % i), os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 1 << 20)
    maps.append(mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
    os.close(fd)
v, end = 0, time.monotonic() + 2
while time.monotonic() < end:
    v += 1
    for m in maps:
        m[0:8] = struct.pack("<Q", v)
    if v == ready_at:
        open(ready, "w").close()
    time.sleep(0.001)
print(v, flush=True)
while not os.path.exists(stop):
    time.sleep(0.05)
