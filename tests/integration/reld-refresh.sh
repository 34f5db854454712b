#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A capture must never wait for the live view, nor the live view for a capture:
# A. `stillctl refresh` while an application keeps a WAL database open through the mount (its
#    -shm is mapped there, so the capture reads the store through the mount): the refresh
#    completes. (It used to set its attribute on MOUNTPOINT, whose inode lock the kernel holds
#    until the reply: the capture's listing of the root waited for it forever.)
# B. Meanwhile the root of the live view stays usable: while a refresh waits for a store that
#    does not settle, lookups, creates and listings in the root complete at once. The refresh
#    then fails with stillctl's "unsettled" status, 3 (the daemon cannot answer EAGAIN: the
#    VFS turns it into EOPNOTSUPP for setxattr).
# C. With snapdir=visible and a WAL database open through the mount, the capture does not walk
#    into .snapshot (which would wait for that very capture, forever) and does not nest the
#    previous generation into the new one.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/sub" "$mnt"
echo plain >"$store/sub/plain"

# wal_app DB: an application writing a WAL database through the mount until killed.
wal_app() {
  exec python3 - "$1" <<'EOF'
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1])
c.execute('pragma journal_mode=wal')
c.execute('create table if not exists t(x)')
c.commit()
i = 0
while True:
    c.execute('insert into t values (?)', (i,))
    c.commit()
    i += 1
    time.sleep(0.3)
EOF
}
refresh_bg() { "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 & RPID=$!; T_PIDS+=("$RPID"); }
refresh_done() { ! kill -0 "$RPID" 2>/dev/null; }
refresh_ok() {  # refresh_ok WHAT SECONDS
  refresh_bg
  t_wait_for "$2" refresh_done
  wait "$RPID" || { cat "$T_WORK/refresh.out" >&2; t_fail "$1: refresh failed"; }
  reld_forget "$RPID"
}
shm_open() { [ -e "$store/app.db-shm" ]; }
check_db() {  # check_db WHAT: the generation's copy of the app's database is whole
  local n
  n=$(sqlite3 "file:$mnt/.snapshot/app.db?immutable=1" 'pragma integrity_check; select count(*) from t;' | tr '\n' ' ')
  [[ $n == "ok "[0-9]* ]] || t_fail "$1: the captured database: $n"
}

# --- A and B ---------------------------------------------------------------------------------
t_mount "$store" "$mnt" -o auto_unmount,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=8
wal_app "$mnt/app.db" & app=$!; T_PIDS+=("$app")
t_wait_for 20 shm_open
for i in 1 2 3; do refresh_ok "A: refresh $i with a WAL database open through the mount" 60; done
check_db "A"
kill "$app"; wait "$app" 2>/dev/null || true
reld_forget "$app"

# B: a file rewritten without pause keeps the store from settling for settle_timeout (8 s).
( exec 2>/dev/null; i=0; while :; do echo "$i" >"$store/busy"; i=$((i + 1)); done ) & busy=$!; T_PIDS+=("$busy")
capturing() { [ "$(t_status "$mnt" capturing)" = yes ]; }
refresh_bg
t_wait_for 20 capturing
ms() { local t0; t0=$(date +%s%N); "$@" >/dev/null || t_fail "B: $* failed during a capture"; echo $(( ($(date +%s%N) - t0) / 1000000 )); }
worst=0
for op in "stat $mnt/sub" "touch $mnt/created-during-capture" "ls $mnt" "cat $mnt/sub/plain" "mkdir $mnt/dir-during-capture"; do
  t=$(ms $op)
  ((t > worst)) && worst=$t
  ((t < 2000)) || t_fail "B: '$op' took $t ms while a refresh was capturing"
done
capturing || t_fail "B: the capture ended before the checks (they proved nothing)"
t_wait_for 30 refresh_done
# It did not settle: stillctl says so, with its own exit status (3).
rc=0; wait "$RPID" || rc=$?
reld_forget "$RPID"
[ "$rc" -eq 3 ] || t_fail "B: an unsettled refresh exited $rc, not 3: $(cat "$T_WORK/refresh.out")"
grep -q 'no consistent cut' "$T_WORK/refresh.out" || t_fail "B: the unsettled refresh says: $(cat "$T_WORK/refresh.out")"
kill "$busy"; wait "$busy" 2>/dev/null || true
reld_forget "$busy"
t_log "B: slowest live-root operation during a capture: $worst ms"
t_unmount "$mnt"
reld_forget "$T_DAEMON_PID"
t_log_clean "$T_DAEMON_LOG" 'capture: no consistent cut|capture failed \(Resource temporarily unavailable\)'

# --- C: snapdir=visible ------------------------------------------------------------------------
rm -f "$store/busy" "$store"/app.db*
t_mount "$store" "$mnt" -o auto_unmount,snapdir=visible,snapshot_max_age=3600,snapshot_linger=0
ls -a "$mnt" | grep -qx .snapshot || t_fail "C: .snapshot is not listed with snapdir=visible"
[ "$(cat "$mnt/.snapshot/sub/plain")" = plain ] || t_fail "C: generation 1"
wal_app "$mnt/app.db" & app=$!; T_PIDS+=("$app")
t_wait_for 20 shm_open
for i in 1 2; do refresh_ok "C: refresh $i with snapdir=visible and a WAL database open through the mount" 60; done
[ ! -e "$mnt/.snapshot/.snapshot" ] || t_fail "C: the generation holds a .snapshot of its own"
[ ! -e "$T_WORK/cache.mnt/gen-$(t_status "$mnt" generation)/.snapshot" ] || t_fail "C: a .snapshot was captured into the cache"
check_db "C"
reld_verify "$mnt/.snapshot" "C"
kill "$app"; wait "$app" 2>/dev/null || true
reld_forget "$app"
ls -a "$mnt" | grep -qx .snapshot || t_fail "C: .snapshot no longer listed for others"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG" 'capture: no consistent cut|capture failed \(Resource temporarily unavailable\)'   # (B, same log)
echo "# reld-refresh: ok"
