#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# One user's openers of .snapshot cannot have everyone else's refused. Openers that need a new
# generation wait for the capture under way, at most max_threads - a quarter - 1 of them at
# once, and every one beyond is refused with EBUSY (reld-attack-capwait). The count is one for
# all users: a user who may write a database of the store holds each capture (an EXCLUSIVE lock
# on it, for up to settle_timeout, 30 s by default) and opens .snapshot from that many
# processes; every other user's opener - an uploader's - is then refused at once, though the
# previous generation is there to serve, for as long as the capture lasts, capture after
# capture. (Before the limit such an opener waited for the capture and got its result.)
#
# The defence this checks: each user's requests run on at most a quarter of the request
# threads (the rest wait in the daemon, holding none), so one user cannot fill the waiting
# places; another user's opener meanwhile waits for the capture and gets its result.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import sqlite3' 2>/dev/null || t_fail "python3's sqlite3 module is needed"

t_attacker sfcq
victim=sfcv$$
t_useradd "$victim"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt"
chmod 1777 "$store/pub"
echo shared >"$store/f0"
# 8 threads: 2 never wait for a capture, the one that starts it and 5 more may; 2 per user.
t_mount "$store" "$mnt" -o auto_unmount,allow_other,max_threads=8,snapshot_max_age=0,snapshot_linger=0,settle_timeout=300
ls "$mnt/.snapshot/" >/dev/null || t_fail "no first generation"

cat >"$T_WORK/lock.py" <<'PY'
import signal, sqlite3, sys
c = sqlite3.connect(sys.argv[2], isolation_level=None)
c.execute("create table if not exists t(x)")
c.execute("begin exclusive")
c.execute("insert into t values(1)")
print("ready", flush=True)
signal.pause()
PY
chmod 644 "$T_WORK/lock.py"
reld_user_py "$T_WORK/lock.py" lock "$store/pub/db"
locker=$upid

# The attacker's openers: one starts the capture (held by the lock), the others wait for it
# or for a request thread of the attacker's share (2 of 8).
pids=()
for ((i = 0; i < 8; i++)); do
  setpriv --reuid "$user" --regid "$user" --init-groups -- ls "$mnt/.snapshot/" >"$T_WORK/a.$i" 2>&1 &
  pids+=("$!")
  T_PIDS+=("$!")
done
t_wait_for 60 reld_asked "${pids[@]}"
t_wait_for 20 eval '[ "$(t_status "$mnt" capturing)" = yes ]'
t_log "the attacker's openers: $(t_status "$mnt" capture_waiters) wait for the capture, $(t_status "$mnt" requests_parked) requests parked, $(t_status "$mnt" capture_waiters_refused) refused"

# Another user's opener is not refused: it waits for the capture, and gets its result.
setpriv --reuid "$victim" --regid "$victim" --init-groups -- ls "$mnt/.snapshot/" >"$T_WORK/v.out" 2>&1 &
vpid=$!
T_PIDS+=("$vpid")
t_wait_for 60 reld_asked "$vpid"
release() {
  kill "$locker" 2>/dev/null || true
  local p
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
if grep -q 'Device or resource busy' "$T_WORK/v.out"; then
  release
  t_fail "another user's ls of .snapshot was refused with EBUSY while one user's openers waited for a capture that user holds: $(cat "$T_WORK/v.out")"
fi
release
rc=0
wait "$vpid" || rc=$?
((rc == 0)) || t_fail "another user's ls of .snapshot failed: $(cat "$T_WORK/v.out")"
grep -qx f0 "$T_WORK/v.out" || t_fail "another user's ls of .snapshot: $(cat "$T_WORK/v.out")"
for ((i = 0; i < 8; i++)); do
  grep -qx f0 "$T_WORK/a.$i" || t_fail "the attacker's ls $i: $(cat "$T_WORK/a.$i")"
done
t_unmount "$mnt"
echo "PASS: one user's openers of .snapshot do not have another user's refused"
