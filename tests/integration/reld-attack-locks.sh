#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Blocking lock requests cannot take the daemon's request threads (security: the daemon runs
# as root with allow_other, and any user may block as many lock requests as they have
# processes).
# An unprivileged user (created here) holds locks and starts 1,000 requests that block on
# them: flock and fcntl F_SETLKW, through the live view and .snapshot. Meanwhile root's
# lookups, creates and reads of .stillfs-status are each answered within 100 ms. Once the
# user's processes are killed, every wait ends (the kernel's interrupts are answered), the
# locks are free, and the daemon's descriptors are back where they were before the attack.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
command -v useradd >/dev/null && command -v setpriv >/dev/null || t_fail "useradd and setpriv are needed"
per_kind=${LOCKERS_PER_KIND:-250}            # 4 kinds: 1,000 blocked requests
bound_ms=100

atk_user=sfatk$$
useradd -M -N -s /usr/sbin/nologin "$atk_user" || t_fail "cannot create the test user"
ATK_PIDS=()
trap 'rc=$?; set +e; reld_untrace
      for p in "${ATK_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
      ( (exit "$rc"); t_cleanup ); userdel "$atk_user" 2>/dev/null; exit "$rc"' EXIT
as_user=(setpriv --reuid "$atk_user" --regid nogroup --clear-groups --)   # execs: $! is the user's process
py=/usr/bin/python3                          # the system's: root's PATH may name one the user cannot run
[ -x "$py" ] || py=$(command -v python3)

chmod 711 "$T_WORK"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt"
chmod 1777 "$store/pub"
echo world >"$store/world" && chmod 644 "$store/world"
# no_live_cache: every stat below then reaches the daemon (a cached answer proves nothing)
# without making new nodes, so descriptor counts compare.
t_mount "$store" "$mnt" -o auto_unmount,allow_other,no_live_cache,snapshot_max_age=3600,snapshot_linger=0

cat >"$T_WORK/locker.py" <<'EOF'
# locker.py KIND PATH THREADS: THREADS threads each open PATH and request a lock that blocks
# (KIND flock: LOCK_EX; posixw: F_SETLKW write; posixr: F_SETLKW read; hold-*: the same once,
# without blocking, then "locked" on stdout). Then sleep until killed.
import fcntl, os, sys, threading, time
kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
threading.stack_size(256 * 1024)
def lock(fd, k, nb):
    if k.endswith("flock"):
        fcntl.flock(fd, fcntl.LOCK_EX | nb)
    else:
        fcntl.lockf(fd, (fcntl.LOCK_EX if k.endswith("posixw") else fcntl.LOCK_SH) | nb)
def one():
    fd = os.open(path, os.O_RDWR if kind.endswith("posixw") else os.O_RDONLY)
    lock(fd, kind, 0)
    os.write(2, b"locker got the lock\n")
if kind.startswith("hold-"):
    fd = os.open(path, os.O_RDWR if kind.endswith("posixw") else os.O_RDONLY)
    lock(fd, kind, fcntl.LOCK_NB)
    print("locked", flush=True)
else:
    for _ in range(n):
        threading.Thread(target=one, daemon=True).start()
time.sleep(3600)
EOF
cat >"$T_WORK/ofd.py" <<'EOF'
# ofd.py hold PATH: an OFD write lock (root, on the cache's copy) until killed.
# ofd.py free PATH: 0 if PATH can be write-locked (OFD) and flock'ed now (and lets go).
import fcntl, os, struct, sys, time
F_OFD_SETLK = 37
fd = os.open(sys.argv[2], os.O_RDWR)
try:
    fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
    if sys.argv[1] == "free":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(1)
if sys.argv[1] == "hold":
    print("locked", flush=True)
    time.sleep(3600)
EOF

# Everything the attack touches is looked up once before the baseline is taken.
"${as_user[@]}" sh -c "echo mine >'$mnt/pub/own'" || t_fail "the user cannot create a file"
cat "$mnt/.snapshot/world" >/dev/null || t_fail "no snapshot"
snapcopy=$(find "$T_WORK/cache.mnt" -path '*/gen-*' -name world -type f | head -n 1)
[ -n "$snapcopy" ] || t_fail "the snapshot's copy of world is not in the cache"
stat "$mnt/world" "$mnt/pub/own" "$mnt/.snapshot/world" >/dev/null
echo probe >"$store/probe"
stat "$mnt/probe" >/dev/null
# Descriptors other than pipes: libfuse gives each request thread a pipe pair (for splice),
# and the attack may have made it start more of them; their number is checked below.
fd_count() { find /proc/"$T_DAEMON_PID"/fd -mindepth 1 -lname 'pipe:*' -o -mindepth 1 -printf x | wc -c; }
threads() { local t=(/proc/"$T_DAEMON_PID"/task/*); echo "${#t[@]}"; }
before=$(fd_count)

# start NAME CMD...: a background process whose stdout is $T_WORK/NAME.out.
start() {
  local name=$1; shift
  "$@" >"$T_WORK/$name.out" 2>>"$T_WORK/lockers.err" &
  ATK_PIDS+=("$!")
}
holding() { grep -q locked "$T_WORK/$1.out"; }
start h1 "${as_user[@]}" "$py" "$T_WORK/locker.py" hold-flock "$mnt/world" 0
start h2 "${as_user[@]}" "$py" "$T_WORK/locker.py" hold-flock "$mnt/.snapshot/world" 0
start h3 "${as_user[@]}" "$py" "$T_WORK/locker.py" hold-posixw "$mnt/pub/own" 0
python3 "$T_WORK/ofd.py" hold "$snapcopy" >"$T_WORK/h4.out" & root_holder=$!; T_PIDS+=("$root_holder")
for h in h1 h2 h3 h4; do t_wait_for 20 holding "$h"; done

procs=5 per_proc=$((per_kind / 5))
for i in $(seq "$procs"); do
  start "l$i" "${as_user[@]}" "$py" "$T_WORK/locker.py" flock "$mnt/world" "$per_proc"
  start "l$i" "${as_user[@]}" "$py" "$T_WORK/locker.py" flock "$mnt/.snapshot/world" "$per_proc"
  start "l$i" "${as_user[@]}" "$py" "$T_WORK/locker.py" posixw "$mnt/pub/own" "$per_proc"
  start "l$i" "${as_user[@]}" "$py" "$T_WORK/locker.py" posixr "$mnt/.snapshot/world" "$per_proc"
done
total=$((4 * procs * per_proc))
waiting() { [ "$(t_status "$mnt" lock_waiters)" = "$total" ]; }
t_wait_for 60 waiting
t_log "$total lock requests wait; daemon threads: $(threads)"

# elapsed_ms CMD...: run CMD (it must succeed within 10 s), print how long it took.
elapsed_ms() {
  local t0 t1
  t0=$(date +%s%N)
  timeout 10 "$@" >/dev/null || t_fail "'$*' failed or hung while $total lock requests wait"
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
worst=0
for i in 1 2 3 4 5; do
  a=$(elapsed_ms stat "$mnt/probe")
  b=$(elapsed_ms touch "$mnt/root-made.$i")
  c=$(elapsed_ms cat "$mnt/.stillfs-status")
  t_log "round $i: stat ${a} ms, create ${b} ms, cat .stillfs-status ${c} ms"
  for x in $a $b $c; do ((x > worst)) && worst=$x; done
  rm "$mnt/root-made.$i"
done
((worst < bound_ms)) || t_fail "root waited ${worst} ms (bound ${bound_ms} ms) while $total lock requests wait"
grep -q "got the lock" "$T_WORK/lockers.err" 2>/dev/null && t_fail "a locker got a lock that is held"

# The user's processes die: every wait ends, the locks are free, nothing is left behind.
for p in "${ATK_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
for p in "${ATK_PIDS[@]}"; do { wait "$p"; } 2>/dev/null || true; done
kill "$root_holder"; wait "$root_holder" 2>/dev/null || true
reld_forget "$root_holder"
ATK_PIDS=()
none_waiting() { [ "$(t_status "$mnt" lock_waiters)" = 0 ]; }
t_wait_for 20 none_waiting
free_all() {
  python3 "$T_WORK/ofd.py" free "$store/world" && python3 "$T_WORK/ofd.py" free "$store/pub/own" &&
    python3 "$T_WORK/ofd.py" free "$snapcopy"
}
t_wait_for 20 free_all
settled() { (($(fd_count) <= before)); }
t_wait_for 20 settled
# The request loop never has more than its 64 workers, besides main, housekeeping, inotify
# and lock-waiter threads.
(($(threads) <= 64 + 4)) || t_fail "the daemon has $(threads) threads"
pipes=$(find /proc/"$T_DAEMON_PID"/fd -mindepth 1 -lname 'pipe:*' -printf x | wc -c)
((pipes <= 2 * $(threads))) || t_fail "the daemon holds $pipes pipe descriptors for $(threads) threads"
t_log "descriptors: $before before the attack, $(fd_count) after; threads: $(threads)"
a=$(elapsed_ms stat "$mnt/probe")
((a < bound_ms)) || t_fail "stat took ${a} ms after the attack"
python3 "$T_WORK/locker.py" hold-flock "$mnt/world" 0 >"$T_WORK/after.out" & p=$!
t_wait_for 10 holding after
kill "$p"; wait "$p" 2>/dev/null || true
# Queued waits still behave as blocking locks: granted when the holder lets go through the
# mount or directly on the store, and ended by a signal with EINTR, without the lock.
timeout 60 python3 - "$mnt/world" "$store/world" <<'EOF' || t_fail "a queued lock wait misbehaved"
import fcntl, os, signal, sys, threading, time
mnt, direct = sys.argv[1], sys.argv[2]
class Alarm(Exception):
    pass
def on_alarm(*a):
    raise Alarm()        # a handler that returns would have Python retry the lock (PEP 475)
signal.signal(signal.SIGALRM, on_alarm)
for kind in ("flock", "posix"):
    op = fcntl.flock if kind == "flock" else fcntl.lockf
    for holder_path in (mnt, direct):
        locked_r, locked_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:                           # the holder, another process
            h = os.open(holder_path, os.O_RDWR)
            # The round before closed its descriptor of the mount, whose lock the daemon
            # lets go when the kernel's RELEASE arrives, after close returned: wait for that.
            until = time.monotonic() + 10
            while True:
                try:
                    op(h, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > until:
                        raise
                    time.sleep(0.01)
            os.write(locked_w, b"x"); os.read(go_r, 1); os._exit(0)
        os.read(locked_r, 1)
        fd = os.open(mnt, os.O_RDWR)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            op(fd, fcntl.LOCK_EX)
            sys.exit(f"{kind} via {holder_path}: got a held lock")
        except Alarm:    # raised only once the wait returned (EINTR)
            pass
        threading.Timer(0.3, lambda: os.write(go_w, b"x")).start()   # the holder lets go
        t0 = time.monotonic()
        op(fd, fcntl.LOCK_EX)
        waited = time.monotonic() - t0
        assert waited < 2, f"{kind} via {holder_path}: granted after {waited:.2f} s"
        os.waitpid(pid, 0)
        os.close(fd)
        for x in (locked_r, locked_w, go_r, go_w): os.close(x)
EOF
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# reld-attack-locks: ok"
