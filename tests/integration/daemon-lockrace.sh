#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# No lost locks when the kernel reuses a file pointer: the owner id of an OFD lock taken
# through the mount is derived from the file pointer, which a new open may get back while the
# daemon still processes the release of the file that had it. Many threads open, lock and
# close in a tight loop; every lock a thread believes it holds must be seen on STORE.
# Nor when a blocked POSIX lock request is granted after another thread of its process closed
# a descriptor of the file (that close drops the locks held then, not one granted later).
source "$(dirname "$0")/lib.sh"
: "${LOCKRACE:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo data >"$store/lockme"
t_mount "$store" "$mnt" -o snapshot_max_age=0,snapshot_linger=0

out=$("$LOCKRACE" "$mnt/lockme" "$store/lockme" "${LOCKRACE_THREADS:-16}" "${LOCKRACE_SECONDS:-8}") ||
  t_fail "locks lost or failed: $out"
t_log "$out"
# Every descriptor is closed and released: no lock may be left on STORE.
t_wait_for 20 python3 -c 'import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)' "$store/lockme"

# A waiter granted after a flush of its owner: STORE holds a lock, a thread of P waits for it
# through the mount, another thread of P opens and closes the file, STORE lets go.
timeout 60 python3 - "$mnt" "$store/lockme" <<'PY' || t_fail "a POSIX lock granted after a flush of its owner was lost"
import fcntl, os, subprocess, sys, threading, time
mnt, stored = sys.argv[1], sys.argv[2]
def status(key):
    for line in open(os.path.join(mnt, ".stillfs-status")):
        k, _, v = line.partition(": ")
        if k == key:
            return v.strip()
def wait_for(what, cond):
    deadline = time.monotonic() + 20
    while not cond():
        if time.monotonic() > deadline:
            sys.exit("timed out waiting for " + what)
        time.sleep(0.02)
def held_on_store():  # by someone else: tried from another process
    return subprocess.run([sys.executable, "-c", """import fcntl, sys
f = open(sys.argv[1], "r+")
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(1)""", stored]).returncode == 1
holder = subprocess.Popen([sys.executable, "-c", """import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()""", stored], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline() == "locked\n"
f = open(os.path.join(mnt, "lockme"), "r+")
granted = threading.Event()
def waiter():
    fcntl.lockf(f, fcntl.LOCK_EX)
    granted.set()
threading.Thread(target=waiter, daemon=True).start()
wait_for("the lock request to wait in the daemon", lambda: status("lock_waiters") == "1")
open(os.path.join(mnt, "lockme")).close()
holder.stdin.close()
holder.wait()
wait_for("the lock to be granted", granted.is_set)
if not held_on_store():
    sys.exit("granted, but STORE does not see the lock")
f.close()
wait_for("the lock to go with the close", lambda: not held_on_store())
PY

t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# daemon-lockrace: ok"
