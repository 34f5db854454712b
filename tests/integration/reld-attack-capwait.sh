#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Requests waiting in the daemon cannot take every request thread. An open of .snapshot that
# needs a new generation waits for the capture in a request thread. A user who opened it from
# more processes than the daemon has threads (max_threads) hung the live view for as long as
# the capture lasted; and a capture whose helper writes mapped pages back through the mount (a
# file mapped shared without passthrough) then hung for good, as no thread was left to serve
# that write. Now (fs/daemon/loop.c, gen.c):
#   - a user's requests run on a quarter of the threads at most; the others wait in the daemon
#     holding none, and another user's requests, root's, the capture's are served meanwhile;
#   - openers waiting for a capture never take the last quarter of the threads: past that they
#     get EBUSY at once (root here, whose requests may use all threads but 2);
#   - the capture writes the mapped page back through the mount, ends, and every opener that
#     waited takes its result.
# The capture is held by the user's rollback database, locked EXCLUSIVE directly on the store,
# for as long as the test needs (settle_timeout is long); the user's file mapped through a
# no_passthrough mount holds a dirty page the capture must write back.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
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
echo hello >"$store/f0"
chown "$user:" "$store/pub/map.bin"
# 16 threads: 4 never wait for a capture, the one that starts it and 11 more may; a user's
# requests run on 4, root's on 14.
t_mount "$store" "$mnt" -o auto_unmount,allow_other,no_passthrough,max_threads=16,snapshot_max_age=0,snapshot_linger=0,settle_timeout=300
[ "$(t_status "$mnt" request_threads_max)" = 16 ] || t_fail "status: request_threads_max is not 16"

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
reld_user_py "$T_WORK/user.py" map "$mnt/pub/map.bin"
mapper=$upid
reld_user_py "$T_WORK/user.py" lock "$store/pub/db"
locker=$upid

# Openers of .snapshot needing a new generation (opens, as `ls` makes: the kernel sends lookups
# in one directory one at a time, opens all at once): first the user's, 8 of them.
upids=() rpids=()
for ((i = 0; i < 8; i++)); do
  setpriv --reuid "$user" --regid "$user" --init-groups -- ls "$mnt/.snapshot/" >"$T_WORK/u.$i" 2>&1 &
  upids+=("$!")
  T_PIDS+=("$!")
done
t_wait_for 60 reld_asked "${upids[@]}"
t_wait_for 20 eval '[ "$(t_status "$mnt" capturing)" = yes ]'
field() { awk -v k="$1:" '$1 == k { print $2 }' "$T_WORK/status"; }
status() {   # the status file, as root, answered within 20 s
  timeout -s KILL 20 cat "$mnt/.stillfs-status" >"$T_WORK/status" ||
    t_fail "the status file did not answer while openers wait for a capture ($1)"
}
status "the user's"
t_log "the user's 8 openers: $(field capture_waiters) wait for the capture, $(field requests_parked) requests parked"
[ "$(field capture_waiters)" = 3 ] || t_fail "capture_waiters is $(field capture_waiters), not 3: a user's requests run on 4 threads"
[ "$(field requests_parked)" -ge 4 ] || t_fail "requests_parked is $(field requests_parked), not 4 or more"
# The live view answers root and another user meanwhile (names the kernel has not seen yet).
echo new >"$store/pub/new.txt"
[ "$(timeout -s KILL 20 cat "$mnt/pub/new.txt")" = new ] ||
  t_fail "root's read through the live view did not answer while the user's openers wait"
victim=sfcv$$
t_useradd "$victim"
echo other >"$store/pub/other.txt"
[ "$(setpriv --reuid "$victim" --regid "$victim" --init-groups -- timeout -s KILL 20 cat "$mnt/pub/other.txt")" = other ] ||
  t_fail "another user's read through the live view did not answer while the user's openers wait"

# Then root's 12: 8 more may wait (11 in all), the other 4 are refused at once.
for ((i = 0; i < 12; i++)); do
  ls "$mnt/.snapshot/" >"$T_WORK/r.$i" 2>&1 &
  rpids+=("$!")
  T_PIDS+=("$!")
done
t_wait_for 60 reld_asked "${rpids[@]}"
status "root's too"
t_log "and root's 12: $(field capture_waiters) wait, $(field capture_waiters_refused) refused"
[ "$(field capturing)" = yes ] || t_fail "the capture is not held by the locked database"
[ "$(field capture_waiters)" = 11 ] || t_fail "capture_waiters is $(field capture_waiters), not 11 (16 threads, 4 kept free, 1 capturing)"
[ "$(field capture_waiters_refused)" = 4 ] || t_fail "capture_waiters_refused is $(field capture_waiters_refused), not 4"

# Once the database is free, the capture writes the mapped page back through the mount, ends,
# and the waiting openers take its result.
kill "$locker"
ended() { local p; for p in "${upids[@]}" "${rpids[@]}"; do [ ! -e "/proc/$p" ] || return 1; done; }
t_wait_for 120 ended
ok=0 busy=0
for ((i = 0; i < 20; i++)); do
  if ((i < 8)); then p=${upids[$i]} out=$T_WORK/u.$i; else p=${rpids[$((i - 8))]} out=$T_WORK/r.$((i - 8)); fi
  rc=0
  wait "$p" || rc=$?
  if ((rc == 0)); then
    grep -qx f0 "$out" || t_fail "ls $out: $(cat "$out")"
    ok=$((ok + 1))
  else
    ((i >= 8)) || t_fail "the user's ls $i failed: $(cat "$out")"
    grep -q 'Device or resource busy' "$out" || t_fail "ls $out failed otherwise: $(cat "$out")"
    busy=$((busy + 1))
  fi
done
t_log "openers: $ok answered from the capture, $busy refused with EBUSY"
((ok == 16 && busy == 4)) || t_fail "$ok answered and $busy refused, not 16 and 4"
[ "$(t_status "$mnt" capturing)" = no ] || t_fail "still capturing"
[ "$(t_status "$mnt" captures_ok)" -ge 1 ] || t_fail "no capture succeeded: $(grep -i error "$T_DAEMON_LOG" | tail -n 3)"
cmp -s <(head -c 5 <(tail -c +4097 "$mnt/.snapshot/pub/map.bin")) <(printf dirty) ||
  t_fail "the snapshot lacks the page the user mapped and dirtied before the capture"
kill "$mapper"
wait "$mapper" 2>/dev/null || true
t_unmount "$mnt"
echo "PASS: requests waiting for a capture leave threads free: the live view answers root and others, the write-back ends the capture, openers past the bound get EBUSY"
