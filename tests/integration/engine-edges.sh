#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Edges of the store that must not stop or tear a backup:
# - a path deeper than PATH_MAX is skipped with one warning; the rest is captured;
# - a file with 200 names is one file in the snapshot (hard links, one copy), and a write to it
#   through a name outside the store (no inotify event in the store) is in the next snapshot
#   under every name;
# - the wall clock stepped back 15 s or forward 1 h during a capture costs no wait (before:
#   the capture waited out the step), and a changed file is still dated after every earlier
#   upload.
source "$(dirname "$0")/lib.sh"
: "${TIMESHIFT:?TIMESHIFT must point to the clock-step shim}"
store=$T_WORK/store
mkdir -p "$store/current" "$store/archive" "$T_WORK/outside"
echo top >"$store/top.txt"

# 1. A chain of directories 25 x 201 bytes deep.
python3 - "$store" <<'PY'
import os, sys
d = os.open(sys.argv[1], os.O_RDONLY)
for _ in range(25):
    os.mkdir('d' * 200, dir_fd=d)
    nd = os.open('d' * 200, os.O_RDONLY, dir_fd=d); os.close(d); d = nd
fd = os.open('deep.txt', os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d); os.write(fd, b'deep\n'); os.close(fd)
PY
# 2. One file, 200 names in the store and one outside it.
head -c 1048576 /dev/urandom >"$store/current/x.bin"
for i in $(seq 200); do ln "$store/current/x.bin" "$store/archive/x$i.bin"; done
ln "$store/current/x.bin" "$T_WORK/outside/x.bin"
"$STILLCTL" snapshot "$store" "$T_WORK/s1" 2>"$T_WORK/err1" || { cat "$T_WORK/err1" >&2; t_fail "snapshot with a deep path failed"; }
[ "$(grep -c 'skipping what lies in ddd' "$T_WORK/err1")" = 1 ] || { cat "$T_WORK/err1" >&2; t_fail "no single warning about the deep path"; }
"$STILLCTL" verify "$T_WORK/s1" >/dev/null || t_fail "s1 does not verify"
[ "$(cat "$T_WORK/s1/top.txt")" = top ] || t_fail "the rest of the store was not captured"
[ "$(stat -c %h "$T_WORK/s1/current/x.bin")" = 201 ] ||
  t_fail "the 201 names of x.bin are $(stat -c %h "$T_WORK/s1/current/x.bin") links in the snapshot, not one file"
kb=$(du -sk "$T_WORK/s1" | cut -f1)
((kb < 2048)) || t_fail "the snapshot of one 1 MiB file with 201 names takes $kb KiB"
cmp -s "$T_WORK/s1/archive/x77.bin" "$store/current/x.bin" || t_fail "archive/x77.bin differs"
# A write through the name outside the store raises no event in it; the next snapshot has it.
printf 'CHANGED' | dd of="$T_WORK/outside/x.bin" bs=1 seek=1000 conv=notrunc status=none
"$STILLCTL" snapshot -q --previous "$T_WORK/s1" "$store" "$T_WORK/s2" 2>/dev/null || t_fail "incremental snapshot failed"
for n in current/x.bin archive/x1.bin archive/x200.bin; do
  cmp -s "$T_WORK/s2/$n" "$store/current/x.bin" || t_fail "s2/$n does not hold the write made through another name"
done
cmp -s "$T_WORK/s1/archive/x1.bin" "$T_WORK/s2/archive/x1.bin" && t_fail "s1 changed with s2: they share a file that changed"
"$STILLCTL" verify "$T_WORK/s1" >/dev/null || t_fail "s1 does not verify after s2 was made"
"$STILLCTL" verify "$T_WORK/s2" >/dev/null || t_fail "s2 does not verify"
echo "# 201 names of a 1 MiB file: $kb KiB in the snapshot"

# 3. Clock steps during a capture (the shim steps the capture's wall clock 50 ms in, during its
# first pass over a 200 MiB file).
rm -rf "$store"/d* "$store/archive" "$store/current"
head -c 200M /dev/zero >"$store/big"
for step in -15 +3600; do
  start=$(date +%s)
  t0=$(date +%s%N)
  STILLFS_TIMESHIFT="$step@0.05" LD_PRELOAD=$TIMESHIFT "$STILLCTL" snapshot -q "$store" "$T_WORK/c$step" ||
    t_fail "capture with a clock step of $step s failed"
  ms=$((($(date +%s%N) - t0) / 1000000))
  ((ms < 8000)) || t_fail "a clock step of $step s made the capture take $ms ms"
  "$STILLCTL" verify "$T_WORK/c$step" >/dev/null || t_fail "the capture with a clock step of $step s does not verify"
  m=$(stat -c %Y "$T_WORK/c$step/big")
  ((m > start)) || t_fail "after a clock step of $step s, a new file is dated $m, not after the capture began ($start)"
  echo "# clock step $step s during a capture: $ms ms"
done

# 4. A wall clock ahead of the store's timestamps (a file server's clock that lags) must not make
# a write of a moment ago look old: a group of three files written 150 ms apart, the capture
# started right after the first, with its clock 1.5 s ahead (before: the cut fell after the
# first file, 5 times in 5). The capture reads the time against the clock that stamps ctimes
# too, so a clock of its own that runs ahead is not believed.
rm -rf "$store"/*
mkdir "$store/g"
for f in 0 1 2; do echo 0 >"$store/g/f$f"; done
torn=0
for i in 1 2 3 4 5; do
  echo "$i" >"$store/g/f0"
  # (--uploads-before in the past: no wait for the next whole second, which would hide it)
  STILLFS_TIMESHIFT="1.5@0" LD_PRELOAD=$TIMESHIFT "$STILLCTL" snapshot -q \
    --uploads-before $(($(date +%s) - 5)) "$store" "$T_WORK/g$i" &
  cap=$!
  sleep 0.15; echo "$i" >"$store/g/f1"   # the writer's own pauses inside its group
  sleep 0.15; echo "$i" >"$store/g/f2"
  wait "$cap" || t_fail "capture $i with a clock 1.5 s ahead failed"
  got=$(cat "$T_WORK/g$i/g/f0" "$T_WORK/g$i/g/f1" "$T_WORK/g$i/g/f2" | tr '\n' ' ')
  case $got in "$i $i $i " | "$((i - 1)) $((i - 1)) $((i - 1)) ") ;; *) torn=$((torn + 1)); echo "# torn: $got" >&2 ;; esac
done
((torn == 0)) || t_fail "$torn of 5 captures split a group whose files were written 150 ms apart"
echo "# clock 1.5 s ahead of the store's timestamps: 5 captures, none split the group"

# 5. A database with a second name (here outside the store) may have its WAL or journal beside
# that name: refused with one clear line, nothing published.
sqlite3 "$store/two.db" 'create table t(x); insert into t values (1);'
ln "$store/two.db" "$T_WORK/outside/two.db"
rc=0; "$STILLCTL" snapshot -q "$store" "$T_WORK/two" 2>"$T_WORK/err5" || rc=$?
[ "$rc" = 1 ] && grep -q 'two.db has 2 names' "$T_WORK/err5" ||
  { cat "$T_WORK/err5" >&2; t_fail "a database with two names was not refused clearly (exit $rc)"; }
[ ! -e "$T_WORK/two" ] || t_fail "a snapshot was published with a database of two names"
rm -f "$store/two.db" "$T_WORK/outside/two.db"

# 6. A capture killed with SIGKILL leaves its staging beside DEST; the next capture of that DEST
# removes it.
head -c 100M /dev/zero >"$store/big"
mkdir "$T_WORK/k"
"$STILLCTL" snapshot -q "$store" "$T_WORK/k/dest" 2>/dev/null &
cap=$!
staging() { compgen -G "$T_WORK/k/.dest.stillfs-tmp.*" >/dev/null; }
t_wait_for 20 staging
kill -KILL "$cap"; wait "$cap" 2>/dev/null || true
staging || t_fail "no staging left by the killed capture (nothing to test)"
"$STILLCTL" snapshot -q "$store" "$T_WORK/k/dest" 2>/dev/null || t_fail "capture after a killed one failed"
left=$(ls -A "$T_WORK/k" | tr '\n' ' ')
[ "$left" = "dest " ] || t_fail "a killed capture's leftovers remain: $left"
