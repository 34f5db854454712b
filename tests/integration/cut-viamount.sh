#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# While an SQLite WAL index is open through the mount without passthrough, the capture helper
# reads the store through the mount. Its inotify watches are then on the mount's directories,
# which report only what is done through the mount: a file made directly in the store (the
# application may use either) raises nothing there, and a file written directly is seen only
# as the daemon's attribute cache lets a stat see it, which a write through a name outside
# the store (or AIO) never invalidates. Here sub/x.bin is written through its other name outside
# the store, new.txt is made directly in the store, then count.txt is written directly: a
# snapshot with count.txt 2 must hold new.txt and the new sub/x.bin. The capture is the
# second one: sub/x.bin, unchanged since the first, is shared with it and never read, which
# would have had the kernel ask the daemon for its attributes again.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${STILLFS:?STILLFS must point to the stillfs binary}"
store=$T_WORK/store
mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt" "$T_WORK/outside"
echo 1 >"$store/count.txt"
mkdir "$store/sub"
echo 1 >"$store/sub/x.bin"
ln "$store/sub/x.bin" "$T_WORK/outside/x.bin"
# Shared with the first capture only when its ctime is older than 2 s (cap_ident).
old_enough() { (($(date +%s) - $(stat -c %Z "$store/sub/x.bin") >= 3)); }
t_wait_for 10 old_enough
t_mount "$store" "$mnt" -o no_passthrough,snapshot_max_age=3600,snapshot_linger=0

python3 - "$mnt/wal.db" >"$T_WORK/app.out" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma journal_mode=wal"); c.execute("create table if not exists t(x)")
c.execute("insert into t values (1)")
print("open", flush=True); time.sleep(3600)
PY
T_PIDS+=("$!")
app_open() { grep -q open "$T_WORK/app.out"; }
t_wait_for 20 app_open
"$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || t_fail "the first capture failed: $(cat "$T_WORK/refresh.out")"

# A file changing every 50 ms through the mount keeps the capture from its cut until stop.
churn() { while [ ! -e "$T_WORK/stop" ]; do date +%s%N >"$mnt/churn.txt"; sleep 0.05; done; }
t_bg churn
refresh() { local rc=0; "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || rc=$?; echo "$rc" >"$T_WORK/refresh.rc"; }
t_bg refresh
# The helper has copied count.txt and x.bin (its staging directory is in the cache).
staged() {
  local d
  for d in "$T_WORK"/cache.mnt/.gen-*.stillfs-tmp.*; do
    cmp -s "$d/count.txt" "$store/count.txt" && cmp -s "$d/sub/x.bin" "$store/sub/x.bin" && return 0
  done
  return 1
}
t_wait_for 30 staged

echo 2 >>"$T_WORK/outside/x.bin"
echo 2 >"$store/new.txt"
echo 2 >"$store/count.txt"
touch "$T_WORK/stop"
t_wait_for 60 test -s "$T_WORK/refresh.rc"
[ "$(cat "$T_WORK/refresh.rc")" = 0 ] || t_fail "the capture failed: $(cat "$T_WORK/refresh.out")"
snap=$mnt/.snapshot
count=$(cat "$snap/count.txt")
"$STILLCTL" verify "$snap" >/dev/null || t_fail "the snapshot fails stillctl verify"
[ "$(sqlite3 "file:$snap/wal.db?mode=ro&immutable=1" 'select count(*) from t')" = 1 ] ||
  t_fail "the snapshot misses the WAL's commit"
torn=()
[ "$count" != 2 ] || [ -e "$snap/new.txt" ] || torn+=("new.txt, made before it, is missing")
[ "$count" != 2 ] || [ "$(tr -d "\\n" <"$snap/sub/x.bin")" = 12 ] || torn+=("sub/x.bin, written before it, is old")
((${#torn[@]} == 0)) || t_fail "published but torn: count.txt is 2 and $(IFS=';'; echo "${torn[*]}")"
echo "published: count.txt $count, new.txt $(cat "$snap/new.txt" 2>/dev/null || echo absent)"
