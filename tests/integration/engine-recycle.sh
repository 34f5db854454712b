#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stillctl snapshot --recycle DIR: the copies of databases that changed are taken over from
# the given-up snapshot DIR and brought up to date in place (only changed pages written);
# copies another snapshot shares are never taken; the result is exact; DIR loses its manifest
# once something was taken; a DIR inside the store is refused; the store is never touched.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store; mkdir -p "$store/seg"
head -c 300000 /dev/urandom >"$store/seg/a.bin"
# A 6 MiB rollback-mode database (several 1 MiB blocks) and one that never changes.
sqlite3 "$store/db.sqlite3" "pragma page_size=4096; create table t(k integer primary key, v blob);
  with recursive n(i) as (select 1 union all select i + 1 from n where i < 1500)
  insert into t select i, randomblob(3000) from n;"
sqlite3 "$store/still.sqlite3" "create table s(x); insert into s values (42);"
old_enough() { [ $(( $(date +%s) - $(stat -c %Z "$store/db.sqlite3") )) -ge 3 ]; }
t_wait_for 10 old_enough
store_sum() { (cd "$store" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

# live_equals SNAP: the snapshot's db.sqlite3 holds exactly the live rows.
dump() { sqlite3 "$1" .dump | sha256sum; }
live_equals() { [ "$(dump "$1/db.sqlite3")" = "$(dump "$store/db.sqlite3")" ]; }
expect_refused() {
  "$STILLCTL" snapshot --recycle "$store/inner" "$store" "$T_WORK/s8" 2>"$T_WORK/s8.err" &&
    t_fail "a recycle directory inside the store was accepted"
  grep -q 'inside the store' "$T_WORK/s8.err" || t_fail "unclear error: $(cat "$T_WORK/s8.err")"
  [ "$(wc -l <"$T_WORK/s8.err")" = 1 ] || t_fail "more than one line of error: $(cat "$T_WORK/s8.err")"
  [ -z "$(ls -A "$T_WORK" | grep s8 | grep -v s8.err)" ] || t_fail "a refused snapshot left something behind"
}
# untouched CMD...: run CMD, failing the test if the store changed meanwhile.
untouched() {
  local b; b=$(store_sum)
  "$@"
  [ "$(store_sum)" = "$b" ] || t_fail "the store changed while stillctl ran: $*"
}

"$STILLCTL" snapshot -q "$store" "$T_WORK/s1"
ino1=$(stat -c %i "$T_WORK/s1/db.sqlite3")
# A few pages change: rows updated in place and appended.
sqlite3 "$store/db.sqlite3" "update t set v = randomblob(3000) where k % 300 = 0;
  insert into t select 2000 + k, randomblob(3000) from t where k <= 20;"
b=$(store_sum)
"$STILLCTL" snapshot --recycle "$T_WORK/s1" "$store" "$T_WORK/s2" 2>"$T_WORK/s2.log"
cat "$T_WORK/s2.log" >&2
[ "$(store_sum)" = "$b" ] || t_fail "the store changed while stillctl ran"
grep -q 'database copies recycled' "$T_WORK/s2.log" || t_fail "nothing was recycled: $(cat "$T_WORK/s2.log")"
[ "$(stat -c %i "$T_WORK/s2/db.sqlite3")" = "$ino1" ] || t_fail "db.sqlite3 was not taken over from s1"
copied=$(grep -o '[0-9.]* [KMG]\?i\?B copied' "$T_WORK/s2.log" | awk '{print $1 $2}')
[ "$(numfmt --from=iec-i "${copied%B}")" -lt 3000000 ] || t_fail "the recycled capture wrote $copied (the database is 6 MiB)"
"$STILLCTL" verify "$T_WORK/s2" >/dev/null || t_fail "the snapshot made from a recycled copy does not verify"
live_equals "$T_WORK/s2" || t_fail "the recycled copy does not hold the live rows"
[ ! -e "$T_WORK/s1/.stillfs-manifest" ] || t_fail "s1 kept its manifest after giving up a copy"
[ ! -e "$T_WORK/s1/db.sqlite3" ] || t_fail "s1 still has the database copy that was taken"
# The unchanged database and plain file are shared, not taken.
[ "$(stat -c %i "$T_WORK/s2/still.sqlite3")" = "$(stat -c %i "$T_WORK/s1/still.sqlite3")" ] ||
  t_fail "the unchanged database was not shared with s1"
[ -e "$T_WORK/s1/seg/a.bin" ] || t_fail "a plain file was taken from s1"

# A copy that another snapshot shares is never taken: s3 shares s2's (unchanged) database.
"$STILLCTL" snapshot -q --previous "$T_WORK/s2" "$store" "$T_WORK/s3"
[ "$(stat -c %h "$T_WORK/s3/db.sqlite3")" = 2 ] || t_fail "s3 does not share the unchanged database with s2"
sqlite3 "$store/db.sqlite3" "update t set v = randomblob(3000) where k = 7;"
"$STILLCTL" snapshot -q --recycle "$T_WORK/s3" "$store" "$T_WORK/s4"
"$STILLCTL" verify "$T_WORK/s2" >/dev/null || t_fail "s2 was changed through a copy s3 shared with it"
"$STILLCTL" verify "$T_WORK/s4" >/dev/null || t_fail "s4 does not verify"
live_equals "$T_WORK/s4" || t_fail "s4 does not hold the live rows"
[ "$(stat -c %i "$T_WORK/s4/db.sqlite3")" != "$(stat -c %i "$T_WORK/s2/db.sqlite3")" ] ||
  t_fail "s4 took the copy s2 and s3 shared"

# A copy two changes behind, recycled while --previous names a newer snapshot.
"$STILLCTL" snapshot -q --previous "$T_WORK/s4" "$store" "$T_WORK/s5"
sqlite3 "$store/db.sqlite3" "delete from t where k between 100 and 400; insert into t select 5000 + k, randomblob(2000) from t where k < 50;"
"$STILLCTL" snapshot -q --previous "$T_WORK/s5" "$store" "$T_WORK/s6"
sqlite3 "$store/db.sqlite3" "update t set v = randomblob(100) where k % 7 = 0;"
untouched "$STILLCTL" snapshot -q --previous "$T_WORK/s6" --recycle "$T_WORK/s5" "$store" "$T_WORK/s7"
"$STILLCTL" verify "$T_WORK/s7" >/dev/null || t_fail "s7 (recycled from two changes back) does not verify"
live_equals "$T_WORK/s7" || t_fail "s7 does not hold the live rows"
"$STILLCTL" verify "$T_WORK/s6" >/dev/null || t_fail "the --previous snapshot s6 was changed"

# WAL mode with the writer's connection open: the backup API writes into the recycled copy,
# and only the pages that differ reach the disk.
wal=$T_WORK/wstore; mkdir -p "$wal"; mkfifo "$T_WORK/wfifo"
exec 5<>"$T_WORK/wfifo"   # read-write: opening it does not wait for the other end
sqlite3 "$wal/w.db" <"$T_WORK/wfifo" 5>&- >/dev/null & T_PIDS+=("$!")
sql() { rm -f "$T_WORK/done"; echo "$1" >&5; echo ".shell touch '$T_WORK/done'" >&5; t_wait_for 20 test -e "$T_WORK/done"; }
sql "pragma journal_mode=wal; pragma wal_autocheckpoint=0; create table t(k integer primary key, v blob);
  with recursive n(i) as (select 1 union all select i + 1 from n where i < 1500)
  insert into t select i, randomblob(3000) from n;"
[ -s "$wal/w.db-wal" ] || t_fail "no -wal in use"
"$STILLCTL" snapshot -q "$wal" "$T_WORK/w1"
sql "update t set v = randomblob(3000) where k % 300 = 0; insert into t values (9999, x'00');"
"$STILLCTL" snapshot --recycle "$T_WORK/w1" "$wal" "$T_WORK/w2" 2>"$T_WORK/w2.log"
cat "$T_WORK/w2.log" >&2
grep -q 'database copies recycled' "$T_WORK/w2.log" || t_fail "WAL: nothing was recycled"
copied=$(grep -o '[0-9.]* [KMG]\?i\?B copied' "$T_WORK/w2.log" | awk '{print $1 $2}')
[ "$(numfmt --from=iec-i "${copied%B}")" -lt 3000000 ] || t_fail "WAL: the recycled capture wrote $copied (the database is 6 MiB)"
"$STILLCTL" verify "$T_WORK/w2" >/dev/null || t_fail "WAL: the snapshot does not verify"
[ "$(dump "$T_WORK/w2/w.db")" = "$(dump "$wal/w.db")" ] || t_fail "WAL: the copy does not hold the live rows"
echo .quit >&5; exec 5>&-

# Never out of the store: a snapshot kept inside the store is not a recycle source.
"$STILLCTL" snapshot -q "$store" "$T_WORK/inner" && mv "$T_WORK/inner" "$store/inner"
untouched expect_refused
echo "ok"
