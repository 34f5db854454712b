#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Readers waiting for a capture cannot take every request thread. A lookup in .snapshot that
# needs a new generation waits for the capture in one of the daemon's request threads. A user
# who started more such lookups than the daemon has threads (max_threads) hung the live view
# for as long as the capture lasted; and a capture whose helper writes mapped pages back
# through the mount (a file mapped shared without passthrough) then hung for good, since no
# thread was left to serve that write. Now a quarter of the threads (2 at least) never wait
# for a capture: callers beyond are refused at once with EBUSY, the live view and the status
# file answer meanwhile, and the capture writes the mapped page back and ends.
#
# The capture is held by the user's rollback database, locked EXCLUSIVE directly on the store,
# for as long as the test needs (settle_timeout is long); the user's file mapped through a
# no_passthrough mount holds a dirty page the capture must write back.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import sqlite3' 2>/dev/null || t_fail "python3's sqlite3 module is needed"

# Too few threads for that are refused at start, -s (one thread) too.
for opt in "-s" "-o max_threads=3"; do
  mkdir -p "$T_WORK/s0" "$T_WORK/m0"
  rc=0
  # shellcheck disable=SC2086 # opt is words on purpose
  "$STILLFS" "$T_WORK/s0" "$T_WORK/m0" -f $opt >"$T_WORK/few.err" 2>&1 || rc=$?
  [ "$rc" = 2 ] || t_fail "stillfs $opt: exit $rc, not 2 (usage): $(cat "$T_WORK/few.err")"
  grep -q 'max_threads=4 at least' "$T_WORK/few.err" || t_fail "stillfs $opt: unclear error: $(cat "$T_WORK/few.err")"
  ! t_is_stillfs "$T_WORK/m0" || t_fail "stillfs $opt mounted"
done

t_attacker sfcw
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt"
chmod 1777 "$store/pub"
head -c 65536 /dev/zero >"$store/pub/map.bin"
n=12
for ((i = 0; i < n; i++)); do echo "$i" >"$store/f$i"; done
chown "$user:" "$store/pub/map.bin"
# 8 threads: 2 never wait for a capture, the one that starts it and 5 more may.
t_mount "$store" "$mnt" -o auto_unmount,allow_other,no_passthrough,max_threads=8,snapshot_max_age=0,snapshot_linger=0,settle_timeout=300
[ "$(t_status "$mnt" request_threads_max)" = 8 ] || t_fail "status: request_threads_max is not 8"

cat >"$T_WORK/user.py" <<'PY'
import mmap, os, signal, sqlite3, sys
what, path = sys.argv[1], sys.argv[2]
if what == "lock":
    # a rollback database of the user's, locked EXCLUSIVE directly on the store
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("create table if not exists t(x)")
    c.execute("begin exclusive")
    c.execute("insert into t values(1)")
else:
    # a page of the user's file, mapped through the mount and dirtied, never synced
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 65536, mmap.MAP_SHARED)
    m[4096:4101] = b"dirty"
print("ready", flush=True)
signal.pause()
PY
chmod 644 "$T_WORK/user.py"
start_user() {  # start_user WHAT PATH: the user's process; sets $upid
  setpriv --reuid "$user" --regid "$user" --init-groups -- \
    /usr/bin/python3 "$T_WORK/user.py" "$1" "$2" >"$T_WORK/$1.out" 2>&1 &
  upid=$!
  T_PIDS+=("$upid")
  t_wait_for 20 grep -q ready "$T_WORK/$1.out"
}
start_user map "$mnt/pub/map.bin"
mapper=$upid
start_user lock "$store/pub/db"
locker=$upid

# More openers of .snapshot needing a new generation than the daemon has threads. (Opens, as
# `ls` makes: the kernel sends lookups in one directory one at a time, opens all at once.)
pids=()
for ((i = 0; i < n; i++)); do
  setpriv --reuid "$user" --regid "$user" --init-groups -- ls "$mnt/.snapshot/" >"$T_WORK/look.$i" 2>&1 &
  pids+=("$!")
  T_PIDS+=("$!")
done
# each has been answered, or waits in the kernel for the daemon's answer
settled() {
  local p
  for p in "${pids[@]}"; do
    [ -e "/proc/$p" ] || continue
    grep -q request_wait_answer "/proc/$p/stack" 2>/dev/null || return 1
  done
}
t_wait_for 60 settled
waiting=0
for p in "${pids[@]}"; do [ ! -e "/proc/$p" ] || waiting=$((waiting + 1)); done
t_log "$waiting of $n openers wait for the capture"

# The live view and the status file answer meanwhile (a name the kernel has not seen yet).
echo new >"$store/pub/new.txt"
out=$(timeout -s KILL 20 cat "$mnt/pub/new.txt") ||
  t_fail "a read through the live view did not answer while $waiting openers wait for a capture"
[ "$out" = new ] || t_fail "the live view read '$out'"
status=$(timeout -s KILL 20 cat "$mnt/.stillfs-status") ||
  t_fail "the status file did not answer while $waiting openers wait for a capture"
grep -qx 'capturing: yes' <<<"$status" || t_fail "the capture is not held by the locked database: $status"
wait_n=$(awk '$1 == "capture_waiters:" { print $2 }' <<<"$status")
refused=$(awk '$1 == "capture_waiters_refused:" { print $2 }' <<<"$status")
t_log "status: capture_waiters $wait_n, refused $refused"
[ "$wait_n" = 5 ] || t_fail "capture_waiters is '$wait_n', not 5 (8 threads, 2 kept free, 1 capturing)"
[ "$refused" = $((n - 6)) ] || t_fail "capture_waiters_refused is '$refused', not $((n - 6))"
[ "$waiting" = 6 ] || t_fail "$waiting openers wait, not 6 (the capturing one and 5)"

# Once the database is free, the capture writes the mapped page back through the mount, ends,
# and the waiting openers take its result.
kill "$locker"
ended() { local p; for p in "${pids[@]}"; do [ ! -e "/proc/$p" ] || return 1; done; }
t_wait_for 120 ended
ok=0 busy=0
for ((i = 0; i < n; i++)); do
  rc=0
  wait "${pids[$i]}" || rc=$?
  if ((rc == 0)); then
    grep -qx "f$i" "$T_WORK/look.$i" || t_fail "ls $i: $(cat "$T_WORK/look.$i")"
    ok=$((ok + 1))
  else
    grep -q 'Device or resource busy' "$T_WORK/look.$i" || t_fail "ls $i failed otherwise: $(cat "$T_WORK/look.$i")"
    busy=$((busy + 1))
  fi
done
t_log "openers: $ok answered from the capture, $busy refused with EBUSY"
((ok == 6 && busy == n - 6)) || t_fail "$ok answered and $busy refused, not 6 and $((n - 6))"
[ "$(t_status "$mnt" capturing)" = no ] || t_fail "still capturing"
[ "$(t_status "$mnt" captures_ok)" -ge 1 ] || t_fail "no capture succeeded: $(grep -i error "$T_DAEMON_LOG" | tail -n 3)"
cmp -s <(head -c 5 <(tail -c +4097 "$mnt/.snapshot/pub/map.bin")) <(printf dirty) ||
  t_fail "the snapshot lacks the page the user mapped and dirtied before the capture"
kill "$mapper"
wait "$mapper" 2>/dev/null || true
t_unmount "$mnt"
echo "PASS: openers of .snapshot waiting for a capture leave threads free: the live view answers, the write-back ends the capture, the rest get EBUSY"
