#!/usr/bin/env bash
# Locks forwarded through the mount end when their owner does.
# 1. An OFD lock (F_OFD_SETLK) taken through the mount lasts while its open file description
#    does: it conflicts with a lock on the store's file while held, and is gone once the
#    description is closed without unlocking, or its process killed with SIGKILL. (The kernel
#    names an OFD lock's owner in no flush: only the release of the handle says it ended.)
# 2. Many lock/close cycles, OFD and POSIX, leave the daemon's descriptors where they were.
# 3. The capture engine locks databases with OFD locks, and reads the store through the mount
#    while a WAL index is open there: a capture helper killed while it holds a database still
#    (the store never settles, so its attempt waits under lock) must not leave the database
#    locked for the application.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo data >"$store/f"
t_mount "$store" "$mnt" -o auto_unmount,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=30
# lk MODE PATH...: lock helper (python, for OFD locks)
cat >"$T_WORK/lk.py" <<'EOF'
import fcntl, os, struct, sys, time
F_OFD_SETLK = 37
def ofd(fd, typ):
    fcntl.fcntl(fd, F_OFD_SETLK, struct.pack('hhqqi4x', typ, 0, 0, 0, 0))
def can_lock(path):
    fd = os.open(path, os.O_RDWR)
    try:
        ofd(fd, fcntl.F_WRLCK)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
mode = sys.argv[1]
if mode == 'held':            # lock PATH1 through one description; PATH2 must conflict
    fd = os.open(sys.argv[2], os.O_RDWR); ofd(fd, fcntl.F_WRLCK)
    sys.exit(0 if not can_lock(sys.argv[3]) else 1)
elif mode == 'close':         # lock and close without unlocking
    fd = os.open(sys.argv[2], os.O_RDWR); ofd(fd, fcntl.F_WRLCK); os.close(fd)
elif mode == 'hold':          # lock and wait to be killed
    fd = os.open(sys.argv[2], os.O_RDWR); ofd(fd, fcntl.F_WRLCK)
    print('locked', flush=True); time.sleep(3600)
elif mode == 'free':          # can PATH be write-locked (by someone else)?
    sys.exit(0 if can_lock(sys.argv[2]) else 1)
elif mode == 'cycles':        # N cycles of OFD and POSIX lock, close
    for i in range(int(sys.argv[3])):
        fd = os.open(sys.argv[2], os.O_RDWR); ofd(fd, fcntl.F_WRLCK); os.close(fd)
        fd = os.open(sys.argv[2], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX); os.close(fd)
EOF
lk() { python3 "$T_WORK/lk.py" "$@"; }
lk_free() { lk free "$store/f"; }

# --- 1 ---------------------------------------------------------------------------------------
lk held "$mnt/f" "$store/f" || t_fail "an OFD lock held through the mount does not conflict with the store's file"
t_wait_for 10 lk_free
lk close "$mnt/f"
t_wait_for 10 lk_free
python3 "$T_WORK/lk.py" hold "$mnt/f" >"$T_WORK/hold.out" & holder=$!; T_PIDS+=("$holder")
locked() { grep -q locked "$T_WORK/hold.out"; }
t_wait_for 10 locked
lk_free && t_fail "the held OFD lock does not reach the store"
kill -KILL "$holder"; wait "$holder" 2>/dev/null || true
reld_forget "$holder"
t_wait_for 10 lk_free

# --- 2 ---------------------------------------------------------------------------------------
# Not counting pipes: libfuse gives each worker thread a splice pipe pair, and how many workers
# a burst of requests starts (at most max_threads) is not the daemon's to hold steady.
fd_count() { find /proc/"$T_DAEMON_PID"/fd -mindepth 1 -lname 'pipe:*' -prune -o -mindepth 1 -print | wc -l; }
before=$(fd_count)
lk cycles "$mnt/f" 300
settled() { (( $(fd_count) <= before + 2 )); }
t_wait_for 10 settled
t_log "descriptors: $before before 300 OFD + 300 POSIX lock/close cycles, $(fd_count) after"

# --- 3 ---------------------------------------------------------------------------------------
sqlite3 "$store/r.db" 'create table t(x); insert into t values (1);'
python3 - "$mnt/app.db" <<'EOF' & app=$!
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1]); c.execute('pragma journal_mode=wal'); c.execute('create table if not exists t(x)'); c.commit()
while True:
    c.execute('insert into t values (1)'); c.commit(); time.sleep(0.5)
EOF
T_PIDS+=("$app")
shm_open() { [ -e "$store/app.db-shm" ]; }
t_wait_for 20 shm_open
# A second rollback database, held in an exclusive transaction, comes after r.db (it is in a
# subdirectory): each attempt holds r.db while it waits, within its hold budget, for that one.
mkdir "$store/sub"
sqlite3 "$store/sub/s.db" 'create table t(x);'
python3 - "$store/sub/s.db" <<'EOF' & busy=$!
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('begin exclusive')
while True: time.sleep(1)
EOF
T_PIDS+=("$busy")
s_locked() { ! sqlite3 -cmd '.timeout 0' "$store/sub/s.db" 'select count(*) from t;' >/dev/null 2>&1; }
t_wait_for 20 s_locked
"$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 & ref=$!; T_PIDS+=("$ref")
# The daemon holds, for the helper, an OFD read lock on the store's r.db.
ino=$(stat -c %i "$store/r.db")
db_held() { grep -Eq "OFDLCK +ADVISORY +READ +[0-9-]+ [0-9a-f:]+:$ino " /proc/locks; }
t_wait_for 30 db_held
helper=$(pgrep -P "$T_DAEMON_PID" -f -- '--capture-helper' | head -n 1)
[ -n "$helper" ] || t_fail "no capture helper while the database is held"
T_PIDS+=("$helper")
kill -KILL "$helper"
wait "$ref" 2>/dev/null || true            # the refresh fails: its helper was killed
kill "$busy"; wait "$busy" 2>/dev/null || true
helper_gone() { ! kill -0 "$helper" 2>/dev/null; }
t_wait_for 10 helper_gone
reld_forget "$helper" "$ref" "$busy"
writable() { sqlite3 -cmd '.timeout 0' "$store/r.db" 'insert into t values (2);' 2>/dev/null; }
t_wait_for 10 writable
db_held && t_fail "r.db is still locked after the helper was killed"
kill "$app"; wait "$app" 2>/dev/null || true
reld_forget "$app"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG" 'capture failed \(Interrupted system call\): capture helper killed by signal 9'
echo "# reld-locks: ok"
