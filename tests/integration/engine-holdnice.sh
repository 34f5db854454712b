#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A capture copies at a lower CPU priority (stillctl --nice, the daemon's capture_nice), but
# while it holds a database's lock its writers wait for it, so it runs at the priority it was
# started with until the lock is given back: on a machine whose CPUs the application keeps
# busy, a capture at nice 10 would otherwise get a tenth of a core and keep the writer
# waiting ten times as long. An observer watches /proc/locks for the capture's OFD lock on
# the database and reads the niceness of the capture's main thread while it is there, for
# stillctl and for the daemon's capture helper.
source "$(dirname "$0")/lib.sh"
base=$(ps -o ni= -p $$ | tr -d ' ')
[ "$base" -le 9 ] || { echo "SKIP: the test runs at nice $base" >&2; exit 77; }
store=$T_WORK/store; mkdir -p "$store"
sqlite3 "$store/db.sqlite3" "pragma page_size=4096; create table t(k integer primary key, v blob);
  with recursive n(i) as (select 1 union all select i + 1 from n where i < 12000)
  insert into t select i, randomblob(3000) from n;"
clones=0
cp --reflink=always "$store/db.sqlite3" "$T_WORK/probe" 2>/dev/null && clones=1
rm -f "$T_WORK/probe"

cat >"$T_WORK/writer.py" <<'PY'
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
k = 0
while not os.path.exists(sys.argv[2]):
    k += 1
    db.execute("update t set v = randomblob(3000) where k = ?", (k % 12000 + 1,))
PY
# observer.py DB COMM PATTERN PPID OUT STOP: while an OFD lock is on DB's inode, the niceness of
# the main thread of the process named COMM whose command line holds PATTERN (and whose parent
# is PPID, unless 0), if the lock is still there after it was read; one line per observation
# in OUT. (Other tests may run stillctl beside this one.)
cat >"$T_WORK/observer.py" <<'PY'
import os, sys
db, comm, pattern, ppid, out, stop = sys.argv[1:7]
st = os.stat(db)
key = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
# SQLite's SHARED lock: the 510 bytes after PENDING and RESERVED (a reader holds the PENDING
# byte alone for a moment before, and waits there while a writer holds EXCLUSIVE).
SHARED_FIRST = 0x40000000 + 2
def held():
    with open("/proc/locks") as f:
        for l in f:
            w = l.split()
            if w[1] == "OFDLCK" and w[5] == key and w[6] == str(SHARED_FIRST):
                return True
    return False
def capture():
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % p) as f:
                if f.read().strip() != comm:
                    continue
            with open("/proc/%s/stat" % p) as f:
                if ppid != "0" and f.read().rsplit(")", 1)[1].split()[1] != ppid:
                    continue
            with open("/proc/%s/cmdline" % p, "rb") as f:
                if pattern.encode() in f.read():
                    return p
        except OSError:
            pass
    return None
def nice_of(p):
    with open("/proc/%s/stat" % p) as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])
with open(out, "a", buffering=1) as o:
    while not os.path.exists(stop):
        p = capture()
        try:
            while p and os.path.exists("/proc/" + p) and not os.path.exists(stop):
                if held():
                    n = nice_of(p)
                    if held():
                        o.write("%d\n" % n)
        except (OSError, ValueError, IndexError):
            pass
PY

# watch WHAT COMM PATTERN PPID CMD...: run CMD (one capture) until the observer has seen the lock held
# five times, at most 40 captures; then the nicenesses it saw must include the base one.
watch() {
  local what=$1 comm=$2 pattern=$3 ppid=$4; shift 4
  local obs=$T_WORK/obs.$what i seen=0
  : >"$obs"; rm -f "$T_WORK/ostop"
  python3 "$T_WORK/observer.py" "$store/db.sqlite3" "$comm" "$pattern" "$ppid" "$obs" "$T_WORK/ostop" &
  local op=$!; T_PIDS+=("$op")
  for i in $(seq 40); do
    "$@" || t_fail "$what: capture $i failed"
    seen=$(wc -l <"$obs")
    [ "$seen" -ge 5 ] && break
  done
  touch "$T_WORK/ostop"; wait "$op"
  [ "$seen" -ge 1 ] || t_fail "$what: the observer never saw the capture hold the database"
  t_log "$what: nicenesses seen while the lock was held: $(sort -n "$obs" | uniq -c | tr -s ' \n' ' ')"
  grep -qx -- "$base" "$obs" ||
    t_fail "$what: the capture never ran at nice $base while it held the database (saw: $(sort -un "$obs" | tr '\n' ' '))"
  echo "# $what: ran at nice $base while holding the database ($seen observations)"
}

t_bg python3 "$T_WORK/writer.py" "$store/db.sqlite3" "$T_WORK/stop"
if [ "$clones" = 1 ]; then
  echo "# $(findmnt -n -o FSTYPE -T "$T_WORK") clones: the lock is held for a clone, a short one" >&2
fi

# stillctl: --nice 10 is the default.
"$STILLCTL" snapshot -q "$store" "$T_WORK/s0"
n=0
one_ctl() {
  n=$((n + 1))
  "$STILLCTL" snapshot -q --recycle "$T_WORK/s$((n - 1))" "$store" "$T_WORK/s$n" || return 1
  rm -rf "$T_WORK/s$((n - 1))"
}
watch stillctl stillctl "$store" 0 one_ctl
"$STILLCTL" verify "$T_WORK/s$n" >/dev/null || t_fail "the last snapshot does not verify"

# The daemon's capture helper (capture_nice 10 by default), made to capture by refresh. Not
# with a daemon built with AddressSanitizer (scripts/sanitize.sh runs this test as an engine
# test; the daemon has an ASan pass of its own).
if grep -q __asan_init "$STILLFS"; then
  touch "$T_WORK/stop"
  echo "# daemon: skipped, stillfs built with AddressSanitizer"
  exit 0
fi
mnt=$T_WORK/mnt; mkdir -p "$mnt"
t_mount "$store" "$mnt"
one_daemon() { "$STILLCTL" refresh "$mnt" >/dev/null; }
watch daemon stillfs-capture --capture-helper "$T_DAEMON_PID" one_daemon
touch "$T_WORK/stop"
t_unmount "$mnt"
