#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Lock forwarding and SQLite through the mount:
# - POSIX (fcntl) and flock locks taken through the mount are seen by processes using STORE
#   directly, and the other way round; POSIX owner semantics hold (one process's locks through
#   two descriptors never conflict, and closing either drops them);
# - SQLite in rollback mode locks out a writer on the other side; SQLite WAL works through the
#   mount with concurrent writers;
# - no lost locks: locks held through the mount and directly survive captures (the engine's
#   SQLite connections live in a helper process) and other processes opening/closing the file.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo data >"$store/lockme"
t_mount "$store" "$mnt" -o snapshot_max_age=0,snapshot_linger=0

# A lock holder: takes a lock, says "locked" on its stdout, holds it until its stdin closes.
# lockholder KIND PATH  (KIND: posix | flock | posix2fd-close)
cat >"$T_WORK/holder.py" <<'PY'
import fcntl, os, sys
kind, path = sys.argv[1], sys.argv[2]
f = open(path, "r+")
if kind == "posix":
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
elif kind == "flock":
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
elif kind == "posix2fd":
    # Same process, second descriptor: POSIX locks of one owner never conflict.
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    g = open(path, "r+")
    fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("both", flush=True)
    sys.stdin.readline()
    g.close()          # POSIX: closing any descriptor drops the process's locks
print("locked", flush=True)
sys.stdin.read()
PY
# try KIND PATH: 0 if the lock could be taken now (and releases it), 1 if it is held elsewhere.
cat >"$T_WORK/try.py" <<'PY'
import errno, fcntl, sys
kind, path = sys.argv[1], sys.argv[2]
f = open(path, "r+")
try:
    if kind == "posix":
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError as e:
    if e.errno in (errno.EAGAIN, errno.EACCES):
        sys.exit(1)
    raise
sys.exit(0)
PY
free_() { python3 "$T_WORK/try.py" "$1" "$2"; }
held() { ! python3 "$T_WORK/try.py" "$1" "$2"; }

# hold KIND PATH: start a holder on fd 7 (its stdin) / fd 8 (its stdout).
hold() {
  coproc HOLDER { exec python3 "$T_WORK/holder.py" "$1" "$2"; }
  T_PIDS+=("$HOLDER_PID")
  read -r -t 20 line <&"${HOLDER[0]}" || t_fail "holder $1 $2 did not start"
  HOLDER_LINE=$line
}
release() {
  local pid=$HOLDER_PID
  exec {HOLDER[1]}>&-
  wait "$pid" || t_fail "the lock holder failed"
}

for kind in posix flock; do
  hold "$kind" "$mnt/lockme"
  held "$kind" "$store/lockme" || t_fail "$kind lock through the mount not seen on STORE"
  held "$kind" "$mnt/lockme" || t_fail "$kind lock through the mount not seen through the mount"
  # Other processes opening and closing the file through the mount drop nothing.
  for _ in 1 2 3; do cat "$mnt/lockme" >/dev/null; done
  held "$kind" "$store/lockme" || t_fail "$kind lock lost when another process closed the file"
  # A capture (engine in its helper process) drops nothing either.
  cat "$mnt/.snapshot/lockme" >/dev/null || t_fail "snapshot unreadable"
  held "$kind" "$store/lockme" || t_fail "$kind lock lost across a capture"
  release
  free_ "$kind" "$store/lockme" || t_fail "$kind lock through the mount not released"
  hold "$kind" "$store/lockme"
  held "$kind" "$mnt/lockme" || t_fail "$kind lock on STORE not seen through the mount"
  release
  free_ "$kind" "$mnt/lockme" || t_fail "$kind lock on STORE still seen after release"
done

# POSIX owner semantics through the mount.
hold posix2fd "$mnt/lockme"
[ "$HOLDER_LINE" = both ] || t_fail "one process could not lock through two descriptors: $HOLDER_LINE"
held posix "$store/lockme" || t_fail "two-descriptor lock not seen on STORE"
echo >&"${HOLDER[1]}"                    # closes its second descriptor
read -r -t 20 line <&"${HOLDER[0]}" || t_fail "holder did not continue"
free_ posix "$store/lockme" || t_fail "closing one descriptor did not drop the process's POSIX locks"
release

# --- SQLite, rollback mode: a transaction through the mount blocks a writer on STORE and back ---
sqlite3 "$store/app.db" 'create table t(x); insert into t values (1);'
sql_holder() {  # sql_holder DB: BEGIN IMMEDIATE + a write, held until stdin closes
  coproc SQLH { exec python3 -c '
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
db.execute("begin immediate"); db.execute("insert into t values (2)")
print("locked", flush=True); sys.stdin.read(); db.execute("commit")' "$1"; }
  T_PIDS+=("$SQLH_PID")
  read -r -t 20 line <&"${SQLH[0]}" || t_fail "sqlite holder on $1 did not start"
}
sql_release() { local pid=$SQLH_PID; exec {SQLH[1]}>&-; wait "$pid" || t_fail "sqlite holder failed"; }
sql_blocked() { ! sqlite3 -cmd '.timeout 0' "$1" 'begin immediate; insert into t values (3); commit;' 2>/dev/null; }
sql_holder "$mnt/app.db"
sql_blocked "$store/app.db" || t_fail "a write on STORE went through while the mount held RESERVED"
# The engine copies the last committed state, and the holder keeps its lock across it.
[ "$(sqlite3 "file:$mnt/.snapshot/app.db?mode=ro&immutable=1" 'select count(*) from t')" = 1 ] ||
  t_fail "the snapshot does not hold the committed state"
sql_blocked "$store/app.db" || t_fail "the mount's SQLite lock was lost across a capture"
sql_release
sql_holder "$store/app.db"
sql_blocked "$mnt/app.db" || t_fail "a write through the mount went through while STORE held RESERVED"
cat "$mnt/.snapshot/app.db" >/dev/null
sql_blocked "$mnt/app.db" || t_fail "the direct SQLite lock was lost across a capture"
sql_release
[ "$(sqlite3 "$mnt/app.db" 'select count(*) from t')" = 3 ] || t_fail "rollback-mode database lost a commit"

# --- SQLite WAL through the mount: concurrent writers and readers (the -shm is mmap'ed) ------
python3 - "$mnt/wal.db" <<'PY' || t_fail "SQLite WAL through the mount failed"
import sqlite3, sys, threading
from multiprocessing import Process
path = sys.argv[1]
db = sqlite3.connect(path, isolation_level=None)
assert db.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
db.execute("create table t(w, i)")
db.close()
def writer(w):
    c = sqlite3.connect(path, isolation_level=None, timeout=30)
    for i in range(200):
        c.execute("begin immediate"); c.execute("insert into t values (?, ?)", (w, i)); c.execute("commit")
        assert c.execute("select count(*) from t where w = ?", (w,)).fetchone()[0] == i + 1
ps = [Process(target=writer, args=(w,)) for w in range(3)]
for p in ps: p.start()
for p in ps:
    p.join(); assert p.exitcode == 0
c = sqlite3.connect(path)
assert c.execute("select count(*) from t").fetchone()[0] == 600
assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
PY
[ -e "$store/wal.db-wal" ] || [ "$(sqlite3 "$store/wal.db" 'select count(*) from t')" = 600 ] ||
  t_fail "the WAL database is not in the store"
[ "$(sqlite3 "file:$mnt/.snapshot/wal.db?mode=ro&immutable=1" 'select count(*) from t')" = 600 ] ||
  t_fail "the snapshot of the WAL database is not complete"

t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# daemon-locks: ok"
