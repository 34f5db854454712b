#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A fifo put beside a database cannot hold captures forever. The capture helper reads a WAL
# database that a connection holds open with SQLite, whose unix VFS opens the -wal without
# O_NONBLOCK: a user who keeps a WAL database of theirs open in a writable directory of the
# store, and puts a fifo at its -wal name, made the open wait for a writer that never came.
# The capture never ended (capturing: yes), and `stillctl refresh`, and every read of
# .snapshot that needed a new generation, waited with it. Now such a capture fails (the
# previous generation stays): root's refresh returns, the daemon is no longer capturing, and a
# new capture succeeds once they are gone.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import sqlite3' 2>/dev/null || t_fail "python3's sqlite3 module is needed"
t_attacker sffw
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt"
chmod 1777 "$store/pub"
echo hello >"$store/root.txt"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=5
[ "$(cat "$mnt/.snapshot/root.txt")" = hello ] || t_fail "the first snapshot is not readable"

# The user's WAL database, held open by a connection of theirs; its -wal renamed away and a
# fifo put at its name.
cat >"$T_WORK/holder.py" <<'PY'
import os, signal, sqlite3, sys
d = sys.argv[1]
c = sqlite3.connect(d + "/db")
c.execute("pragma journal_mode=wal")
c.execute("create table t(x)")
c.execute("insert into t values(1)")
c.commit()
c.execute("select * from t").fetchall()
os.rename(d + "/db-wal", d + "/old-wal")
os.mkfifo(d + "/db-wal")
print("ready", flush=True)
signal.pause()
PY
chmod 644 "$T_WORK/holder.py"
# (setpriv itself, not the as_user function: $! must be the holder, for the kill below)
setpriv --reuid "$user" --regid "$user" --init-groups -- \
  /usr/bin/python3 "$T_WORK/holder.py" "$store/pub" >"$T_WORK/holder.out" 2>&1 &
holder=$!
T_PIDS+=("$holder")
t_wait_for 20 grep -q ready "$T_WORK/holder.out"
[ -p "$store/pub/db-wal" ] || t_fail "setup: no fifo at the -wal's name"

# Root's refresh must come back (a failure is expected: the database cannot be read).
timeout -s KILL 60 "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 && rc=0 || rc=$?
[ "$rc" = 137 ] && t_fail "stillctl refresh was still waiting after 60 s: the capture is held by the fifo"
t_log "refresh with the fifo: exit $rc"
[ "$(t_status "$mnt" capturing)" = no ] || t_fail "the daemon is still capturing after the refresh returned"
[ "$(cat "$mnt/.snapshot/root.txt")" = hello ] || t_fail ".snapshot is not readable after the refresh"

# Without the database and its fifo, captures work again.
kill "$holder"
wait "$holder" 2>/dev/null || true
rm -f "$store"/pub/*
timeout -s KILL 60 "$STILLCTL" refresh "$mnt" >/dev/null || { cat "$T_DAEMON_LOG" >&2; t_fail "a refresh without the fifo failed"; }
t_unmount "$mnt"
echo "PASS: a fifo at a database's -wal name makes a capture fail, not wait forever"
