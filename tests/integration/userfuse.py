#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# A tiny read-only FUSE file system speaking /dev/fuse directly, as a user's own FUSE daemon
# would: `userfuse.py MOUNTPOINT UID GID FILE NAME` (run as root) mounts it the way fusermount3
# mounts a user's file system with allow_other (user_id=UID, nosuid, nodev), then drops to
# UID/GID and serves one directory holding NAME: FILE's bytes, reported as owned by root with
# mode 04755. It writes "ready" to standard output once the mount is up, and serves until the
# mount goes away.
import os
import struct
import subprocess
import sys

mnt, uid, gid, src, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
data = open(src, "rb").read()
name = name.encode()
fd = os.open("/dev/fuse", os.O_RDWR)
subprocess.check_call(["mount", "-i", "-t", "fuse.userfuse", "-o",
                       "nosuid,nodev,fd=%d,rootmode=40000,user_id=%d,group_id=%d,allow_other"
                       % (fd, uid, gid), "userfuse", mnt], pass_fds=(fd,))
os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)
print("ready", flush=True)

ENOENT, ENOSYS = 2, 38
S_IFDIR, S_IFREG = 0o040000, 0o100000


def attr(ino):
    if ino == 1:
        mode, size, nlink, u, g = S_IFDIR | 0o755, 0, 2, uid, gid
    else:
        mode, size, nlink, u, g = S_IFREG | 0o4755, len(data), 1, 0, 0
    t = 1700000000
    return struct.pack("<QQQQQQIIIIIIIIII", ino, size, (size + 511) // 512, t, t, t, 0, 0, 0,
                       mode, nlink, u, g, 0, 4096, 0)


def reply(unique, err=0, body=b""):
    os.write(fd, struct.pack("<IiQ", 16 + len(body), -err, unique) + body)


while True:
    try:
        req = os.read(fd, 1 << 20 | 4096)
    except OSError as e:
        if e.errno in (19, 4):  # ENODEV: unmounted; EINTR
            if e.errno == 19:
                break
            continue
        raise
    ln, op, unique, node = struct.unpack_from("<IIQQ", req)
    arg = req[40:ln]
    if op == 26:  # INIT
        reply(unique, 0, struct.pack("<IIIIHHIIHHI", 7, 31, 0, 0, 16, 16, 4096, 1, 32, 0, 0)
              + b"\0" * 28)
    elif op == 1:  # LOOKUP
        if node == 1 and arg.rstrip(b"\0") == name:
            reply(unique, 0, struct.pack("<QQQQII", 2, 0, 1, 1, 0, 0) + attr(2))
        else:
            reply(unique, ENOENT)
    elif op == 3:  # GETATTR
        reply(unique, 0, struct.pack("<QII", 1, 0, 0) + attr(node))
    elif op in (14, 27):  # OPEN, OPENDIR
        reply(unique, 0, struct.pack("<QIi", 0, 0, 0))
    elif op == 15:  # READ
        off, size = struct.unpack_from("<QI", arg, 8)
        reply(unique, 0, data[off:off + size])
    elif op == 28:  # READDIR
        off = struct.unpack_from("<QQ", arg)[1]
        out = b""
        ents = [(1, b".", 4), (1, b"..", 4), (2, name, 8)]
        for i, (ino, n, typ) in enumerate(ents):
            if i < off:
                continue
            e = struct.pack("<QQII", ino, i + 1, len(n), typ) + n
            out += e + b"\0" * (-len(e) % 8)
        reply(unique, 0, out)
    elif op in (18, 29, 25):  # RELEASE, RELEASEDIR, FLUSH
        reply(unique)
    elif op in (2, 36, 42):  # FORGET, INTERRUPT, BATCH_FORGET: no reply
        pass
    elif op == 17:  # STATFS
        reply(unique, 0, struct.pack("<QQQQQIIII", 0, 0, 0, 0, 0, 4096, 255, 4096, 0) + b"\0" * 24)
    else:
        reply(unique, ENOSYS)
