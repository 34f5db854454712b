#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A file recognised as a database is rewritten in place by a program that takes no SQLite
# lock (a restore with cp, a tool rewriting it, SQLite's nolock): our SHARED lock does not
# stop it, so a copy made under the lock is torn unless the capture sees the file move
# while it held it. Each version the writer writes fills every 4 KiB block with its number,
# from the first block to the last: at any instant the file holds version v up to some block
# and v-1 after it, so a copy holding anything else was not read at one instant. The code
# before the fix published such a copy in about half of the captures: four rounds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The writer starts once the capture has copied the database early (it is classified as one
# then), rewrites it whole, version after version, for 3 s, and stops.
cat >"$T_WORK/writer.py" <<'PY'
import os, sys, time
path, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.01)
fd = os.open(path, os.O_WRONLY)
size = os.fstat(fd).st_size // 4096 * 4096
end, v = time.monotonic() + 3, 0
while time.monotonic() < end:
    v += 1
    block = (b"v%08d" % v).ljust(4096, b".")
    for off in range(0, size, 4096):
        os.pwrite(fd, block, off)
print(v, flush=True)
PY
cat >"$T_WORK/check.py" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
# A block the writer has not rewritten yet holds the database as made: version 0. (On a loaded
# machine the cut can come before the writer's first block: an untouched copy is one instant.)
def version(o):
    b = data[o:o + 9]
    return int(b[1:9]) if b[:1] == b"v" and b[1:9].isdigit() else 0
vs = [version(o) for o in range(0, len(data) // 4096 * 4096, 4096)]
one = all(a >= b for a, b in zip(vs, vs[1:])) and vs[0] - vs[-1] <= 1
print("one instant" if one else "torn", "(versions %s)" % sorted(set(vs)))
PY

staged() { local f; for f in "$R"/.snap.stillfs-tmp.*/db.sqlite3; do cmp -s "$f" "$R/store/db.sqlite3" && return 0; done; return 1; }
capture() { local rc=0; "$STILLCTL" snapshot -q "$R/store" "$R/snap" 2>"$R/snap.err" || rc=$?; echo "$rc" >"$R/snap.rc"; }

for round in 1 2 3 4; do
  R=$T_WORK/r$round
  mkdir -p "$R/store"
  sqlite3 "$R/store/db.sqlite3" "PRAGMA journal_mode=DELETE; CREATE TABLE t(b BLOB);
    INSERT INTO t VALUES(zeroblob(64000000));" >/dev/null
  echo plain >"$R/store/plain.txt"
  t_bg python3 "$T_WORK/writer.py" "$R/store/db.sqlite3" "$R/go" >"$R/writer.out"
  writer=$!
  t_bg capture
  t_wait_for 60 staged
  touch "$R/go"
  t_wait_for 60 test -s "$R/snap.rc"
  wait "$writer" || true
  rc=$(cat "$R/snap.rc")
  case $rc in
    0)
      verdict=$(python3 "$T_WORK/check.py" "$R/snap/db.sqlite3")
      "$STILLCTL" verify "$R/snap" >/dev/null || t_fail "round $round: the snapshot fails stillctl verify"
      [[ $verdict == one* ]] || t_fail "round $round: published, but the database's copy is $verdict"
      echo "round $round: published, $verdict; the writer wrote $(cat "$R/writer.out") versions"
      ;;
    3) [ ! -e "$R/snap" ] || t_fail "round $round: exit 3 but the snapshot exists"
       t_fail "round $round: no cut: $(cat "$R/snap.err")" ;;
    *) t_fail "round $round: stillctl snapshot exited $rc: $(cat "$R/snap.err")" ;;
  esac
  rm -rf "$R"
done
