#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A capture never dies of a signal, whatever a writer of the store does to a WAL database's
# -shm. Here the owner of a WAL database that a connection of theirs holds open truncates its
# -shm to nothing and back, over and over (truncate -s 0; truncate -s 32768), while captures
# run. The capture's connection has that -shm mapped: a page it touches after the truncation
# raises SIGBUS: it reads zeros instead, and the attempt is redone with new connections.
# Part 1: `stillctl snapshot` must exit 0, 1, 3 or 4 with a one-line error, not 135 (Bus error);
# once the truncations stop and the holder is gone, a snapshot succeeds and verifies. Part 2: an unprivileged user does
# the same in a writable directory of a mounted store; root's refreshes must end with the daemon
# alive and no capture helper killed by SIGBUS.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import sqlite3' 2>/dev/null || t_fail "python3's sqlite3 module is needed"
t_attacker sfst
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt"
chmod 1777 "$store/pub"
echo hello >"$store/root.txt"

cat >"$T_WORK/holder.py" <<'PY'
import signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("create table if not exists t(x)")
c.execute("begin")
for i in range(200):
    c.execute("insert into t values(randomblob(10000))")
c.execute("commit")
c.execute("select count(*) from t").fetchone()
print("ready", flush=True)
signal.pause()
PY
chmod 644 "$T_WORK/holder.py"
cat >"$T_WORK/trunc.sh" <<'SH'
while :; do truncate -s 0 "$1"; truncate -s 32768 "$1"; done
SH
chmod 644 "$T_WORK/trunc.sh"

# Part 1: stillctl snapshot.
/usr/bin/python3 "$T_WORK/holder.py" "$store/db.sqlite3" >"$T_WORK/h1.out" 2>&1 &
h1=$!; T_PIDS+=("$h1")
t_wait_for 20 grep -q ready "$T_WORK/h1.out"
bash "$T_WORK/trunc.sh" "$store/db.sqlite3-shm" &
a1=$!; T_PIDS+=("$a1")
sig=0
for i in $(seq 4); do
  rc=0; "$STILLCTL" snapshot -q --settle-timeout 3 "$store" "$T_WORK/s$i" 2>"$T_WORK/err" || rc=$?
  rm -rf "$T_WORK/s$i"
  t_log "snapshot $i: exit $rc $(head -c 300 "$T_WORK/err")"
  case $rc in
    0) ;;
    1|3|4) [ "$(wc -l <"$T_WORK/err")" = 1 ] || { cat "$T_WORK/err" >&2; t_fail "snapshot $i failed without a one-line error"; } ;;
    *) sig=$((sig + 1)) ;;
  esac
done
# The -shm the holder still maps is wrecked: once it is gone too, the store is captured again.
kill "$a1" "$h1" 2>/dev/null || true; wait "$a1" "$h1" 2>/dev/null || true
"$STILLCTL" snapshot -q "$store" "$T_WORK/after" || t_fail "no snapshot once the truncations stopped"
"$STILLCTL" verify "$T_WORK/after" >/dev/null || t_fail "the snapshot made once the truncations stopped does not verify"
rm -f "$store"/db.sqlite3*
((sig == 0)) || t_fail "$sig of 4 stillctl snapshots died (exit not 0/1/3/4) while the -shm was truncated"

# Part 2: the daemon; the user's database in pub.
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=3
[ "$(cat "$mnt/.snapshot/root.txt")" = hello ] || t_fail "the first snapshot is not readable"
setpriv --reuid "$user" --regid "$user" --init-groups -- /usr/bin/python3 "$T_WORK/holder.py" "$store/pub/db.sqlite3" >"$T_WORK/h2.out" 2>&1 &
h2=$!; T_PIDS+=("$h2")
t_wait_for 20 grep -q ready "$T_WORK/h2.out"
setpriv --reuid "$user" --regid "$user" --init-groups -- bash "$T_WORK/trunc.sh" "$store/pub/db.sqlite3-shm" &
a2=$!; T_PIDS+=("$a2")
for i in $(seq 3); do
  timeout -s KILL 60 "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 || true
done
kill "$a2" "$h2" 2>/dev/null || true; wait "$a2" "$h2" 2>/dev/null || true
kill -0 "$T_DAEMON_PID" 2>/dev/null && t_is_stillfs "$mnt" || t_fail "the daemon died while the -shm was truncated"
if grep -iE 'bus error|signal 7|SIGBUS|killed by' "$T_DAEMON_LOG" >&2; then
  t_fail "a capture helper died of SIGBUS (daemon log above)"
fi
t_unmount "$mnt"
echo "PASS: truncating a -shm under captures kills neither stillctl nor the daemon's helper"
