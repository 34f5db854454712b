#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A plain file written with no event before the cut (through its second name, outside the
# store), then written again with an event after the cut, before the release: the event marks
# its copy to be redone, and the stat sweep after the release must still see the change that
# came before the cut. The writer holds b.db's write lock while the capture, having locked
# a.db, waits for it; it writes version 2 into group.bin through the outside name, then
# commits version 2 to b.db, and once the capture holds b.db, writes the same bytes through the
# store's name. At any instant where b.db holds version 2, group.bin holds it too: a snapshot
# with b.db at 2 and group.bin at 1 is no instant. Five rounds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cat >"$T_WORK/writer.py" <<'PY'
import fcntl, os, sqlite3, struct, sys, time
store, outside, ready, first, held = sys.argv[1:6]
def shared_held(name):
    """Another process holds SQLite's SHARED lock on the database (a read lock on its range)."""
    fd = os.open(os.path.join(store, name), os.O_RDONLY)
    try:
        r = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0x40000002, 510, 0))
        return struct.unpack("hhqqi", r)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)
db = sqlite3.connect(os.path.join(store, held), isolation_level=None)
db.execute("PRAGMA synchronous=OFF")
db.execute("BEGIN EXCLUSIVE")
db.execute("UPDATE t SET v=2, pad=randomblob(3000000)")
open(ready, "w").close()
end = time.monotonic() + 60
while not shared_held(first):            # the capture is locking its databases
    if time.monotonic() > end:
        sys.exit("the capture never locked " + first)
    time.sleep(0.0002)
fd = os.open(os.path.join(outside, "group.bin"), os.O_WRONLY)
os.pwrite(fd, b"%08d" % 2, 0)            # no event in the store
os.close(fd)
db.execute("COMMIT")
end = time.monotonic() + 10
while not shared_held(held):             # the cut is being made
    if time.monotonic() > end:           # (a hold too short to see: this round tests less)
        print("missed the hold of", held, flush=True)
        sys.exit(0)
    time.sleep(0.0002)
time.sleep(0.002)
fd = os.open(os.path.join(store, "group.bin"), os.O_WRONLY)
os.pwrite(fd, b"%08d" % 2, 0)            # the same bytes, with an event
os.close(fd)
PY

for round in 1 2 3 4 5; do
  R=$T_WORK/r$round
  mkdir -p "$R/store" "$R/outside"
  printf '%08d' 1 >"$R/store/group.bin"
  ln "$R/store/group.bin" "$R/outside/group.bin"
  for db in a.db b.db; do
    sqlite3 "$R/store/$db" "PRAGMA journal_mode=DELETE; CREATE TABLE t(v, pad);
      INSERT INTO t VALUES(1, randomblob(3000000));" >/dev/null
  done
  # The capture locks the databases in the order it reads the directory: the writer holds
  # the second.
  mapfile -t order < <(ls -U "$R/store" | grep '\.db$')
  t_bg python3 "$T_WORK/writer.py" "$R/store" "$R/outside" "$R/ready" "${order[0]}" "${order[1]}" \
    >"$R/writer.out" 2>&1
  writer=$!
  t_wait_for 30 test -e "$R/ready"
  rc=0
  "$STILLCTL" snapshot -q "$R/store" "$R/snap" 2>"$R/snap.err" || rc=$?
  wait "$writer" || t_fail "round $round: the writer failed: $(cat "$R/writer.out")"
  case $rc in
    0)
      "$STILLCTL" verify "$R/snap" >/dev/null || t_fail "round $round: the snapshot fails stillctl verify"
      g=$(head -c 8 "$R/snap/group.bin")
      v=$(sqlite3 "$R/snap/${order[1]}" "SELECT v FROM t")
      ((v <= 10#$g)) || t_fail "round $round: published with ${order[1]} at version $v and group.bin at $g"
      echo "round $round: published, ${order[1]} at $v, group.bin at $g $(cat "$R/writer.out")"
      ;;
    3) [ ! -e "$R/snap" ] || t_fail "round $round: exit 3 but the snapshot exists"
       t_fail "round $round: no cut: $(cat "$R/snap.err")" ;;
    *) t_fail "round $round: stillctl snapshot exited $rc: $(cat "$R/snap.err")" ;;
  esac
  rm -rf "$R"
done
