#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A change that raises no event, made after the capture last looked at a file and before it
# copies it. The quiet window must count from that change (the file's ctime), not from when the
# capture last saw something move: the copy takes the change in, and nothing tells the capture
# it was recent.
#
# The store: d/ holds 1,500 small files and e/, which holds the group x.bin and y.bin (4 KiB
# each, every 8 bytes the persist number; a capture copies them after d/'s files), whose writer writes x.bin, pauses 350 ms (less than the 400 ms quiet
# window) and writes y.bin: at any instant y.bin's number is x.bin's or one less. The writer
# writes them with no event in the store, through a second name outside it (round "link") or
# through a shared mapping (round "mmap"), both paths the capture is to see by their ctime. It
# starts a persist when the capture has opened 1,350 files of d/ (inotify IN_OPEN), which puts
# x.bin's change in the first pass, shortly before its copy, after the store was found quiet; after
# a persist it stays still for 3.2 s, so that each capture starts with the store quiet (its
# quiet window already over). Each capture starts at a set phase of the wall-clock second, so
# that the wait for the next whole second (cap_settle) is over before the first pass is. A
# published snapshot with x.bin ahead of y.bin is no instant of the store; one with them equal
# is (the cut before x.bin's change, or after y.bin's).
#
# env: CUT_COPYLATE_ROUNDS (1) captures per way of writing (the code before tore all 10 of
# 5 rounds each, so one of each misses it with probability near 0).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${CUT_COPYLATE_ROUNDS:-1}

cat >"$T_WORK/writer.py" <<'PY'
import ctypes, mmap, os, select, sys, time
store, outside, how = sys.argv[1:4]
GAP, COOL = 0.35, 3.2
TRIGGER = 1350                      # of d/'s 1,500 files opened: its copy is nearly done
IN_OPEN = 0x20
libc = ctypes.CDLL(None, use_errno=True)
ifd = libc.inotify_init1(0)
if ifd < 0 or libc.inotify_add_watch(ifd, os.path.join(store, "d").encode(), IN_OPEN) < 0:
    sys.exit("inotify: %s" % os.strerror(ctypes.get_errno()))
maps = {}
for name in ("x.bin", "y.bin"):
    fd = os.open(os.path.join(store, "d", "e", name) if how == "mmap" else os.path.join(outside, name),
                 os.O_RDWR)
    maps[name] = (fd, mmap.mmap(fd, 4096, mmap.MAP_SHARED) if how == "mmap" else None)
def put(name, n):
    data = (b"%08d" % n) * 512
    fd, m = maps[name]
    if m is None:
        os.pwrite(fd, data, 0)      # through the name outside the store: no event in it
    else:
        m[0:4096] = data            # through the mapping: no event
def opened_in_d(timeout):
    """How many files of d/ (not directories) someone opened within timeout."""
    end, seen = time.monotonic() + timeout, 0
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([ifd], [], [], left)[0]:
            return seen
        buf = os.read(ifd, 65536)
        off = 0
        while off < len(buf):
            mask = int.from_bytes(buf[off + 4:off + 8], "little")
            ln = int.from_bytes(buf[off + 12:off + 16], "little")
            seen += bool(ln) and not mask & 0x40000000    # IN_ISDIR
            off += 16 + ln
        if seen >= TRIGGER:
            return seen
n = 1
while True:
    while opened_in_d(COOL):        # still for COOL seconds, whatever opens d/
        pass
    print("armed", n, flush=True)
    opened = 0
    while opened < TRIGGER:
        opened += opened_in_d(3600)
    n += 1
    put("x.bin", n)
    time.sleep(GAP)
    put("y.bin", n)
    print("persist", n, flush=True)
PY

# The cut should come early in the wall-clock second (see above): start in [.85, .95).
at_phase() { local ns; ns=$(date +%N); ns=$((10#$ns)); ((ns >= 850000000 && ns < 950000000)); }

torn=0 published=0 total=0 report=""
for how in link mmap; do
  W=$T_WORK/$how
  mkdir -p "$W/store/d/e" "$W/outside"
  for i in $(seq 1500); do printf 'file %d\n' "$i" >"$W/store/d/f$i"; done
  for f in x.bin y.bin; do
    python3 -c 'import sys; sys.stdout.buffer.write(b"%08d" % 1 * 512)' >"$W/store/d/e/$f"
    ln "$W/store/d/e/$f" "$W/outside/$f"
  done
  t_bg python3 "$T_WORK/writer.py" "$W/store" "$W/outside" "$how" >"$W/writer.out" 2>&1
  writer=$!
  for ((r = 1; r <= ROUNDS; r++)); do
    t_wait_for 30 grep -q "^armed $r\$" "$W/writer.out"
    kill -0 "$writer" 2>/dev/null || t_fail "the $how writer died: $(cat "$W/writer.out")"
    t_wait_for 5 at_phase
    rc=0
    "$STILLCTL" snapshot -q "$W/store" "$W/snap$r" 2>"$W/snap$r.err" || rc=$?
    t_wait_for 10 grep -q "^persist $((r + 1))\$" "$W/writer.out"
    total=$((total + 1))
    case $rc in
      0)
        published=$((published + 1))
        "$STILLCTL" verify "$W/snap$r" >/dev/null || t_fail "$how round $r: the snapshot fails stillctl verify"
        x=$(head -c 8 "$W/snap$r/d/e/x.bin") y=$(head -c 8 "$W/snap$r/d/e/y.bin")
        line="$how round $r: x.bin $((10#$x)), y.bin $((10#$y))"
        if ((10#$x != 10#$y)); then
          torn=$((torn + 1))
          line="$line: TORN"
        fi
        t_log "$line"
        report="$report$line"$'\n'
        ;;
      3) [ ! -e "$W/snap$r" ] || t_fail "$how round $r: exit 3 but the snapshot exists"
         t_log "$how round $r: no cut (exit 3)" ;;
      *) t_fail "$how round $r: stillctl snapshot exited $rc: $(cat "$W/snap$r.err")" ;;
    esac
    rm -rf "$W/snap$r"
  done
  kill "$writer" 2>/dev/null || true
  wait "$writer" 2>/dev/null || true
done
((torn == 0)) || t_fail "$torn of $published published snapshots ($total captures) are no instant of the store:"$'\n'"$report"
((published * 2 >= total)) || t_fail "only $published of $total captures were published"
t_log "OK: $published of $total captures published, each one instant"
