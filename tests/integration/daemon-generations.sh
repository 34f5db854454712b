#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Generations: materialized at open time, one capture for many concurrent openers, pinned by
# handles and for the linger time, a long reader keeps its generation while a newer one is
# taken (stillctl refresh), no stale cached bytes across generations, unchanged files shared,
# old generations deleted, leftovers cleaned at start, the last generation kept at unmount for
# the next daemon's first capture, and capture failures (disk full) served with the previous
# generation or EIO, and reported.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt cache=$T_WORK/cache.mnt
mkdir -p "$store" "$mnt" "$cache"
echo AAAA >"$store/f"
head -c 3000000 /dev/urandom >"$store/big"
sqlite3 "$store/db.sqlite3" "create table t(v); with recursive n(i) as (select 1 union all select i + 1 from n where i < 40) insert into t select randomblob(50000) from n;"  # over 1 MiB: recyclable
# Leftovers of an earlier run in a cache that is ours: removed at start.
touch "$cache/.stillfs-cache" && mkdir -p "$cache/gen-7/junk" "$cache/.gen-8.stillfs-tmp.1"
t_mount "$store" "$mnt" -o snapshot_max_age=1,snapshot_linger=2
[ "$(ls -A "$cache")" = .stillfs-cache ] || t_fail "leftovers not removed at start: $(ls -A "$cache")"
[ "$(stat -c %a "$cache")" = 700 ] || t_fail "the cache is not mode 0700"

gen() { t_status "$mnt" generation; }
[ "$(gen)" = none ] || t_fail "a generation exists before anyone opened .snapshot"

# Concurrent first openers wait for one capture.
pids=()
for i in 1 2 3 4 5 6; do cat "$mnt/.snapshot/f" >"$T_WORK/par.$i" & pids+=($!); done
wait "${pids[@]}"
for i in 1 2 3 4 5 6; do [ "$(cat "$T_WORK/par.$i")" = AAAA ] || t_fail "concurrent opener $i got '$(cat "$T_WORK/par.$i")'"; done
[ "$(t_status "$mnt" captures_ok)" = 1 ] || t_fail "concurrent openers made $(t_status "$mnt" captures_ok) captures"
[ "$(gen)" = 1 ] || t_fail "expected generation 1"

# A long reader: a handle on a file and one on a directory of generation 1.
exec 3<"$mnt/.snapshot/f"
exec 4<"$mnt/.snapshot"
echo BBBB >"$store/f"                          # same size: caches must not be fooled
aged() { awk -v a="$(t_status "$mnt" age_s)" 'BEGIN { exit !(a > 1.5) }'; }
t_wait_for 10 aged
[ "$(cat "$mnt/.snapshot/f")" = AAAA ] || t_fail "a pinned generation was replaced by age"
[ "$(gen)" = 1 ] || t_fail "a pinned generation was replaced"
[ "$(t_status "$mnt" pinned)" = yes ] && [ "$(t_status "$mnt" handles)" -ge 2 ] || t_fail "status does not show the pin"

# stillctl refresh forces a new generation even while pinned.
"$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" || t_fail "stillctl refresh failed"
grep -q '^generation 2 ' "$T_WORK/refresh.out" || t_fail "refresh said: $(cat "$T_WORK/refresh.out")"
[ "$(gen)" = 2 ] || t_fail "refresh did not make generation 2"
[ "$(cat "$mnt/.snapshot/f")" = BBBB ] || t_fail "stale bytes: generation 2 shows generation 1's content"
[ "$(t_status "$mnt" bytes_shared)" -ge 3000000 ] || t_fail "unchanged files were not shared: $(t_status "$mnt" bytes_shared)"
[ "$(cat "/proc/$$/fd/3")" = AAAA ] || t_fail "the open file lost its generation"
[ "$(cat <&3)" = AAAA ] || t_fail "reading the held handle gave other bytes"
# The process holding .snapshot open still finds generation 1's names below it (the read
# builtin opens the file in this shell, the holder); other processes see generation 2.
read -r held_f <"/proc/$$/fd/4/f"
[ "$held_f" = AAAA ] || t_fail "a name below the held .snapshot left its generation: $held_f"
ls "/proc/$$/fd/4/" | grep -qx f || t_fail "the held .snapshot does not list its generation"
# Those reads of generation 1 ended after generation 2 dated f's change: the next opener gets
# a new generation that dates it later, although files of generation 1 are still open.
[ "$(cat "$mnt/.snapshot/f")" = BBBB ] || t_fail "another process does not see f's new bytes"
[ "$(gen)" = 3 ] || t_fail "reads of generation 1 after generation 2's cut, yet the next opener got generation $(gen)"
[ -d "$cache/gen-1" ] || t_fail "a pinned old generation was deleted"

# Once the handles close and the linger passes, generation 1 goes.
exec 3<&- 4<&-
gone() { [ ! -e "$cache/gen-1" ]; }
t_wait_for 20 gone
[ "$(t_status "$mnt" generations_deleted)" -ge 1 ] || t_fail "status does not count the deletion"

# Age: unpinned and older than max_age, the next opener gets a new generation by itself.
echo CCCC >"$store/f"
unpinned_aged() { [ "$(t_status "$mnt" pinned)" = no ] && aged; }
t_wait_for 20 unpinned_aged
[ "$(cat "$mnt/.snapshot/f")" = CCCC ] || t_fail "no new generation for an opener after max_age"
[ "$(gen)" = 4 ] || t_fail "expected generation 4, got $(gen)"
echo EEEE >"$store/f"       # same size as CCCC; changed while generation 4 may be uploaded
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
t_cache_kept "$cache"

# --- restart: the generation kept at the unmount is never served, but the next daemon's first
# capture is incremental on it: unchanged files keep their mtimes (an uploader sends nothing
# again); f, changed at the same size before the unmount (its own mtime is older than an upload
# of generation 4 could be), is dated after the unmount, so aws s3 sync sends it; and the kept
# generation is gone after that capture.
[ "$(cat "$cache/kept/f")" = CCCC ] || t_fail "the kept generation is not generation 4"
big_mtime=$(stat -c %Y "$cache/kept/big")
db_mtime=$(stat -c %Y "$cache/kept/db.sqlite3")
stopped=$(cut -d. -f1 "$cache/kept.time")
touch "$store/db.sqlite3"    # a new identity, the same bytes: recycled from kept, not shared
(( $(stat -c %Y "$store/f") <= stopped )) || t_fail "test bug: f changed after the unmount"
t_mount "$store" "$mnt" -o snapshot_max_age=1,snapshot_linger=2
[ "$(t_status "$mnt" earlier_generation)" = kept ] || t_fail "the kept generation was not adopted"
[ "$(gen)" = none ] || t_fail "the kept generation is served before any capture"
[ "$(cat "$mnt/.snapshot/f")" = EEEE ] || t_fail "the first generation after a restart is not the store's"
[ "$(gen)" = 1 ] || t_fail "expected generation 1 after the restart, got $(gen)"
[ "$(stat -c %Y "$mnt/.snapshot/big")" = "$big_mtime" ] || t_fail "an unchanged file got a new mtime after the restart"
[ "$(stat -c %Y "$mnt/.snapshot/db.sqlite3")" = "$db_mtime" ] || t_fail "a database with unchanged bytes got a new mtime after the restart"
(( $(stat -c %Y "$mnt/.snapshot/f") > stopped )) || t_fail "a changed file is dated $(stat -c %Y "$mnt/.snapshot/f"), not after the unmount ($stopped)"
(( $(t_status "$mnt" bytes_shared) >= 3000000 )) || t_fail "the first capture after the restart shared $(t_status "$mnt" bytes_shared) bytes"
[ "$(t_status "$mnt" earlier_generation)" = none ] || t_fail "the kept generation is still pending after a capture"
[ ! -e "$cache/kept" ] && [ ! -e "$cache/kept.time" ] || t_fail "the kept generation was not removed after the capture: $(ls -A "$cache")"
"$STILLCTL" verify "$mnt/.snapshot" >/dev/null || t_fail "the first generation after the restart does not verify"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
t_cache_kept "$cache"
# A daemon that captures nothing leaves the kept generation as it found it.
cp "$cache/kept.time" "$T_WORK/kept.time"
t_mount "$store" "$mnt"
t_unmount "$mnt"
cmp -s "$cache/kept.time" "$T_WORK/kept.time" || t_fail "a daemon that served nothing changed kept.time"
t_cache_kept "$cache"
# A daemon stopped by SIGTERM while only a directory of a generation is open keeps it: a
# directory reads no data, and nothing can be opened through it once the daemon is gone.
# (The live root held open too: under LeakSanitizer, its handle must still be reachable.)
t_mount "$store" "$mnt"
exec {held}<"$mnt/.snapshot" {live}<"$mnt"
[ "$(gen)" = 1 ] || t_fail "opening .snapshot made no generation"
kill -TERM "$T_DAEMON_PID"
rc=0; wait "$T_DAEMON_PID" || rc=$?
exec {held}<&- {live}<&-
[ "$rc" -eq 0 ] || t_fail "stillfs exited with status $rc on SIGTERM"
t_cache_kept "$cache"
cmp -s "$cache/kept.time" "$T_WORK/kept.time" && t_fail "the generation kept is the earlier one, not the one served"
# A daemon stopped by SIGTERM while a file of a generation is open keeps nothing: after the
# lazy unmount that file can still be read, later than any time the daemon could write down.
t_mount "$store" "$mnt"
exec {held}<"$mnt/.snapshot/f"
kill -TERM "$T_DAEMON_PID"
rc=0; wait "$T_DAEMON_PID" || rc=$?
exec {held}<&-
[ "$rc" -eq 0 ] || t_fail "stillfs exited with status $rc on SIGTERM"
[ "$(ls -A "$cache")" = .stillfs-cache ] || t_fail "a generation was kept while a file of it was open: $(ls -A "$cache" | tr "\n" " ")"
grep -q 'not keeping generation 1' "$T_DAEMON_LOG" || t_fail "the log does not say why nothing was kept"

# --- capture failure: a cache too small (disk full) -------------------------------------------
small=$T_WORK/small
mkdir -p "$small"
mount -t tmpfs -o size=1m stillfs-test "$small" || t_fail "cannot mount a tmpfs for the full-disk case"
T_MOUNTS+=("$small")
t_mount "$store" "$mnt" -o "cache=$small/c,snapshot_max_age=0,snapshot_linger=0"
cat "$mnt/.snapshot/f" 2>"$T_WORK/eio.err" && t_fail "a capture into a full disk succeeded"
grep -q 'Input/output error' "$T_WORK/eio.err" || t_fail "expected EIO, got: $(cat "$T_WORK/eio.err")"
[ "$(gen)" = none ] || t_fail "a failed capture made a generation"
t_status "$mnt" last_error | grep -Eqi 'space|full' || t_fail "status does not say why: $(t_status "$mnt" last_error)"
[ "$(t_status "$mnt" captures_failed)" -ge 1 ] || t_fail "status does not count the failure"
# With room again, a later opener succeeds (after the back-off).
mv "$store/big" "$store/db.sqlite3" "$T_WORK/"
works() { [ "$(cat "$mnt/.snapshot/f" 2>/dev/null)" = EEEE ]; }
t_wait_for 30 works
[ "$(gen)" = 1 ] || t_fail "expected generation 1 after recovery"
# Full again: the refresh fails, and the previous generation is still served.
mv "$T_WORK/big" "$T_WORK/db.sqlite3" "$store/"
echo DDDD >"$store/f"
rc=0; "$STILLCTL" refresh "$mnt" >/dev/null 2>"$T_WORK/refresh.err" || rc=$?
[ "$rc" -eq 4 ] || t_fail "refresh into a full disk: exit $rc, expected 4: $(cat "$T_WORK/refresh.err")"
[ "$(cat "$mnt/.snapshot/f")" = EEEE ] || t_fail "the previous generation is not served after a failure"
[ "$(gen)" = 1 ] || t_fail "a failed capture replaced the generation"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG" 'no space|No space|capture failed|Input/output|cannot write|cannot finish|cannot publish|cannot copy|capture: '

# --- recycling: the last deleted generation is kept as the spare, and the next capture takes
# over its database copy, writing only the pages that changed; -o no_recycle keeps nothing.
db=$T_WORK/store2/db.sqlite3 mnt2=$T_WORK/mnt2 cache2=$T_WORK/cache.mnt2
mkdir -p "$T_WORK/store2" "$mnt2"
sqlite3 "$db" "create table t(k integer primary key, v blob);
  with recursive n(i) as (select 1 union all select i + 1 from n where i < 1500)
  insert into t select i, randomblob(3000) from n;"
dump() { sqlite3 "$1" .dump | sha256sum; }
spare() { [ "$(t_status "$mnt2" spare_kept)" = "$1" ]; }
for opt in snapshot_linger=0 snapshot_linger=0,no_recycle; do
  t_mount "$T_WORK/store2" "$mnt2" -o "$opt"
  ls "$mnt2/.snapshot" >/dev/null
  for i in 1 2; do
    sqlite3 "$db" "update t set v = randomblob(3000) where k = $((i * 100));"
    "$STILLCTL" refresh "$mnt2" >/dev/null
    gone() { [ "$(ls "$cache2" | grep -c '^gen-')" = 1 ]; }
    t_wait_for 20 gone
  done
  [ "$(dump "$mnt2/.snapshot/db.sqlite3")" = "$(dump "$db")" ] || t_fail "-o $opt: the database served differs from the live one"
  copied=$(t_status "$mnt2" bytes_copied)
  if [ "$opt" = snapshot_linger=0 ]; then
    spare yes || t_fail "no spare generation kept"
    [ "$copied" -lt 1000000 ] || t_fail "the capture after the spare wrote $copied bytes (the database is 6 MiB)"
    "$STILLCTL" verify "$cache2/gen-3" >/dev/null || t_fail "the generation made from the spare does not verify"
  else
    spare no || t_fail "-o no_recycle kept a spare"
    [ ! -e "$cache2/spare" ] || t_fail "-o no_recycle left $cache2/spare"
    [ "$copied" -gt 6000000 ] || t_fail "-o no_recycle: only $copied bytes written"
  fi
  t_unmount "$mnt2"
  t_cache_kept "$cache2"
  rm -rf "$cache2/kept" "$cache2/kept.time"   # each option starts from an empty cache
done
t_log_clean "$T_DAEMON_LOG"
echo "# daemon-generations: ok"
