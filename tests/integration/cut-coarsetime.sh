#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# On a file system that dates changes in whole seconds (ext4 with 128-byte inodes, which mkfs
# still makes on request; some network file systems), a write that raises no inotify event
# (Linux native AIO) in the same second as an earlier write of the same file leaves its stat as
# it was: a copy taken between the two is never found stale. A writer rewrites a group of files
# f00..f19 (1 MiB each, its first and last 4 KiB blocks stamped with the generation) to
# generation 2 with io_submit, within one second: when the capture has read and closed its first
# file, every file's first block, then, as the capture reads and closes each file, that file's
# last block (the rest at the end); generation 1 is dated in an earlier second. Every file of a
# snapshot that stillctl publishes must be whole (both blocks from one generation), and all from
# one generation. Three rounds whose writes all fell in one second (up to six tried, a fresh
# store each: one whose writes did not proves nothing).
source "$(dirname "$0")/lib.sh"
[ -x /usr/bin/python3 ] || { echo "SKIP: /usr/bin/python3 is missing" >&2; exit 77; }
N=20

mnt=$T_WORK/ext4
t_ext4 "$mnt" -I 128
touch "$mnt/probe"
[ "$(stat -c %z "$mnt/probe" | sed -E 's/.*\.([0-9]+) .*/\1/')" = 000000000 ] ||
  { echo "SKIP: this ext4 dates changes finer than whole seconds" >&2; exit 77; }

cat >"$T_WORK/writer.py" <<'PY'
# writer.py STORE N READY: make the files (generation 1); make READY; on the capture's first
# close of a file, write generation 2 as described above, with io_submit. Prints "second S T":
# the wall-clock seconds its first write began and its last write ended in.
import ctypes, os, select, struct, sys, time
SIZE, BLK = 1 << 20, 4096
store, n, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = ["f%02d" % i for i in range(n)]
for x in names:
    with open(os.path.join(store, x), "wb") as f:
        f.write(struct.pack("<Q", 1) * (SIZE // 8))
        f.flush()
        os.fsync(f.fileno())
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ctx = ctypes.c_ulong(0)
if libc.syscall(206, 64, ctypes.byref(ctx)) < 0:  # io_setup
    sys.exit("io_setup: %s" % os.strerror(ctypes.get_errno()))
fds = {x: os.open(os.path.join(store, x), os.O_RDWR) for x in names}
buf = ctypes.create_string_buffer(struct.pack("<Q", 2) * (BLK // 8), BLK)
ev = ctypes.create_string_buffer(32)
def aio_write(fd, off):  # one IOCB_CMD_PWRITE, waited for
    cb = ctypes.create_string_buffer(struct.pack("=QIiHhIQQqQII", 0, 0, 0, 1, 0, fd,
                                                 ctypes.addressof(buf), BLK, off, 0, 0, 0), 64)
    p = (ctypes.c_void_p * 1)(ctypes.addressof(cb))
    if libc.syscall(209, ctx, 1, p) != 1:  # io_submit
        sys.exit("io_submit: %s" % os.strerror(ctypes.get_errno()))
    if libc.syscall(208, ctx, 1, 1, ev, None) != 1:  # io_getevents
        sys.exit("io_getevents: %s" % os.strerror(ctypes.get_errno()))
    if struct.unpack_from("=q", ev, 16)[0] != BLK:
        sys.exit("short write")
ino = libc.inotify_init1(os.O_NONBLOCK)
if ino < 0 or libc.inotify_add_watch(ino, store.encode(), 0x10) < 0:  # IN_CLOSE_NOWRITE
    sys.exit("inotify: %s" % os.strerror(ctypes.get_errno()))
def closed():
    out = []
    try:
        data = os.read(ino, 65536)
    except BlockingIOError:
        return out
    i = 0
    while i < len(data):
        ln = struct.unpack_from("=iIII", data, i)[3]
        out.append(data[i + 16:i + 16 + ln].rstrip(b"\0").decode())
        i += 16 + ln
    return out
made = int(time.time())
while int(time.time()) <= made:  # generation 1 dated in an earlier second than any write below
    select.select([], [], [], 0.01)
open(ready, "w").close()
seen = []
while not seen:
    select.select([ino], [], [])
    seen = [x for x in closed() if x in fds]
t0 = time.time()
for x in names:
    aio_write(fds[x], 0)
tailed = set()
for x in seen:
    aio_write(fds[x], SIZE - BLK)
    tailed.add(x)
while len(tailed) < n and int(time.time()) == int(t0) and time.time() - t0 < 0.9:
    for x in closed():
        if x in fds and x not in tailed:
            aio_write(fds[x], SIZE - BLK)
            tailed.add(x)
for x in names:
    if x not in tailed:
        aio_write(fds[x], SIZE - BLK)
print("second", int(t0), int(time.time()), "seen", len(seen), "tailed", len(tailed), "at", t0 % 1, flush=True)
PY
stamp() { od -An -tu8 -N8 -j "$2" "$1" | tr -d ' '; }
fails=0 rounds=0
for round in 1 2 3 4 5 6; do
  ((rounds < 3)) || break
  S=$mnt/store$round
  mkdir -p "$S"
  t_bg /usr/bin/python3 "$T_WORK/writer.py" "$S" "$N" "$T_WORK/ready$round" >"$T_WORK/writer$round.out" 2>&1
  writer=$!
  t_wait_for 60 test -e "$T_WORK/ready$round"
  rc=0
  "$STILLCTL" snapshot -q "$S" "$mnt/snap$round" 2>"$T_WORK/snap.err" || rc=$?
  wait "$writer" || t_fail "round $round: the writer failed: $(cat "$T_WORK/writer$round.out")"
  T_PIDS=()
  read -r _ s0 s1 _ <"$T_WORK/writer$round.out"
  [ "$rc" -eq 0 ] || t_fail "round $round: the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
  if [ "$s0" != "$s1" ]; then
    echo "# round $round: the writes fell in two seconds ($s0, $s1): proves nothing"
    continue
  fi
  rounds=$((rounds + 1))
  got="" bad=""
  for i in $(seq 0 $((N - 1))); do
    f=$(printf 'f%02d' "$i")
    h=$(stamp "$mnt/snap$round/$f" 0) t=$(stamp "$mnt/snap$round/$f" $(((1 << 20) - 4096)))
    got+=" $f=$h/$t"
    [ "$h" = "$t" ] || bad+=" $f"
  done
  gens=$(tr ' ' '\n' <<<"$got" | sed -n 's/.*=//p' | sort -u | tr '\n' ' ')
  verified=yes
  "$STILLCTL" verify "$mnt/snap$round" >/dev/null 2>&1 || verified=no
  echo "# round $round (writes all in second $s0): snapshot (first/last block):$got; verifies: $verified"
  if [ -n "$bad" ] || [ "$(wc -w <<<"$gens")" -ne 1 ]; then
    echo "FAIL: round $round: published (exit 0; stillctl verify: $verified), but the snapshot is not one generation: files half written:${bad:- none}; generations: $gens" >&2
    fails=$((fails + 1))
  fi
done
umount "$mnt" || t_fail "cannot unmount"
((rounds > 0)) || t_fail "no round had the writer's writes in one second"
((fails == 0))
