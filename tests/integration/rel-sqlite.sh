#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Databases are recognised by their header, not their name, and damaged ones are handled the
# documented way (docs/RELIABILITY.md):
# - x.sqlite3 that is text, random bytes, or an SQLite header on fewer than 512 bytes: a plain
#   file, copied byte for byte (kind f in the manifest); a real database named data.bin: s;
# - an SQLite header on a corrupt body (garbage pages, or a truncated file), rollback format:
#   captured byte for byte, the snapshot succeeds, and stillctl verify names it "corrupt";
#   with a WAL-format header and no -wal, only its format bytes 18-19 are set to 1;
# - a corrupt WAL database with its -wal (no connection open): its private copy is recovered
#   (the WAL's committed frames applied), captured, and named by verify;
# - a database emptied, or overwritten in place with non-SQLite bytes, during a capture: no
#   database any more; the snapshot keeps its bytes exactly as they were at the cut;
# - three WAL databases committing as fast as they can: one commits between the pins, so the
#   cut is retried while the others stay pinned; every snapshot still succeeds and verifies;
# - one writer committing to two WAL databases in turn: every snapshot holds both as of one
#   instant (a commit between the pins that was followed by one after the cut once went by),
#   also when one of them is opened and closed around each commit.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
store=$T_WORK/store
mkdir -p "$store/sub"
kind() { awk -v p="$2" 'f && $NF == p {print $1} $0 == "." {f = 1}' "$1/.stillfs-manifest"; }
sqlite3 "$T_WORK/good.db" 'create table t(x); insert into t values (1); create table u(y); insert into u select randomblob(3000) from t;'
for i in $(seq 20); do sqlite3 "$T_WORK/good.db" "insert into u values (randomblob(3000));"; done
echo "I am not a database" >"$store/x.sqlite3"
head -c 8192 /dev/urandom >"$store/random.sqlite3"
{ printf 'SQLite format 3\0'; head -c 300 /dev/urandom; } >"$store/short.sqlite3"
cp "$T_WORK/good.db" "$store/data.bin"
# Valid header page, garbage after it.
{ head -c 4096 "$T_WORK/good.db"; head -c 40960 /dev/urandom; } >"$store/corrupt.sqlite3"
# A database cut short: the header promises pages that are not there.
head -c 8192 "$T_WORK/good.db" >"$store/truncated.sqlite3"
# WAL-format header (bytes 18-19 = 2), garbage body, no -wal.
{ head -c 18 "$T_WORK/good.db"; printf '\2\2'; dd if="$T_WORK/good.db" bs=4076 skip=20 iflag=skip_bytes count=1 status=none; head -c 8192 /dev/urandom; } >"$store/corruptwal.sqlite3"

"$STILLCTL" snapshot -q "$store" "$T_WORK/s1" 2>"$T_WORK/err" || { cat "$T_WORK/err" >&2; t_fail "snapshot failed"; }
for f in x.sqlite3 random.sqlite3 short.sqlite3; do
  [ "$(kind "$T_WORK/s1" "$f")" = f ] || t_fail "$f is not a plain file in the manifest"
  cmp -s "$store/$f" "$T_WORK/s1/$f" || t_fail "$f not copied byte for byte"
done
[ "$(kind "$T_WORK/s1" data.bin)" = s ] || t_fail "a database named data.bin was not recognised"
for f in corrupt.sqlite3 truncated.sqlite3 corruptwal.sqlite3; do
  [ "$(kind "$T_WORK/s1" "$f")" = s ] || t_fail "$f is not a database in the manifest"
done
cmp -s "$store/corrupt.sqlite3" "$T_WORK/s1/corrupt.sqlite3" || t_fail "corrupt.sqlite3 not byte for byte"
cmp -s "$store/truncated.sqlite3" "$T_WORK/s1/truncated.sqlite3" || t_fail "truncated.sqlite3 not byte for byte"
[ "$(cmp -l "$store/corruptwal.sqlite3" "$T_WORK/s1/corruptwal.sqlite3" | awk '{printf "%s:%s:%s ", $1, $2, $3}')" = "19:2:1 20:2:1 " ] ||
  t_fail "corruptwal.sqlite3 differs beyond its format bytes"
rc=0; "$STILLCTL" verify "$T_WORK/s1" >"$T_WORK/v.out" 2>&1 || rc=$?
((rc == 1)) || { cat "$T_WORK/v.out" >&2; t_fail "verify exited $rc on corrupt databases"; }
for f in corrupt.sqlite3 truncated.sqlite3 corruptwal.sqlite3; do
  grep -q "^corrupt $f: integrity_check" "$T_WORK/v.out" || { cat "$T_WORK/v.out" >&2; t_fail "verify did not report $f"; }
done
[ "$(grep -c '^corrupt ' "$T_WORK/v.out")" = 3 ] || { cat "$T_WORK/v.out" >&2; t_fail "verify reported something else"; }
rm "$store"/corrupt*.sqlite3 "$store/truncated.sqlite3"

# A corrupt WAL database whose -wal nobody has open: recovered from a private copy (its
# committed WAL frames applied), captured; verify names it.
cp "$T_WORK/good.db" "$T_WORK/w.db"
sqlite3 "$T_WORK/w.db" 'pragma journal_mode=wal; pragma wal_autocheckpoint=0; insert into t values (2);' \
  ".shell cp '$T_WORK/w.db' '$T_WORK/w.keep'; cp '$T_WORK/w.db-wal' '$T_WORK/w.keep-wal'" >/dev/null
{ head -c 4096 "$T_WORK/w.keep"; head -c 40960 /dev/urandom; } >"$store/badwal.sqlite3"
cp "$T_WORK/w.keep-wal" "$store/badwal.sqlite3-wal"
"$STILLCTL" snapshot -q "$store" "$T_WORK/s2" 2>"$T_WORK/err" || { cat "$T_WORK/err" >&2; t_fail "snapshot with a corrupt WAL database failed"; }
[ ! -e "$T_WORK/s2/badwal.sqlite3-wal" ] || t_fail "badwal.sqlite3-wal copied"
rc=0; "$STILLCTL" verify "$T_WORK/s2" >"$T_WORK/v.out" 2>&1 || rc=$?
((rc == 1)) && grep -q '^corrupt badwal.sqlite3: integrity_check' "$T_WORK/v.out" ||
  { cat "$T_WORK/v.out" >&2; t_fail "verify did not report the corrupt WAL database"; }
rm "$store"/badwal.sqlite3*

# Databases that stop being databases during a capture, in place (same inode): read first
# (top level), then the capture is kept busy by a big file while they change (--quiet-ms holds
# the cut 2 s past the last change, so a slow shell still changes them first).
sqlite3 "$store/emptied.sqlite3" 'create table t(x); insert into t values (1);'
sqlite3 "$store/overwritten.sqlite3" 'create table t(x); insert into t values (1);'
(yes 0123456789abcdef || true) | head -c 200M >"$store/sub/big.bin"
"$STILLCTL" snapshot -q --quiet-ms 2000 "$store" "$T_WORK/s3" 2>"$T_WORK/err" &
snapper=$!; T_PIDS+=("$snapper")
busy() { compgen -G "$T_WORK/.s3.stillfs-tmp.*/sub/big.bin" >/dev/null; }
t_wait_for 60 busy
: >"$store/emptied.sqlite3"
head -c 6000 /dev/urandom >"$store/overwritten.sqlite3"
r_alive "$snapper" || t_log "warning: the capture ended before the change; the race was not exercised"
rc=0; wait "$snapper" || rc=$?; T_PIDS=()
((rc == 0)) || { cat "$T_WORK/err" >&2; t_fail "snapshot failed when databases stopped being databases ($rc)"; }
for f in emptied.sqlite3 overwritten.sqlite3; do
  cmp -s "$store/$f" "$T_WORK/s3/$f" || t_fail "$f: the snapshot does not hold its bytes at the cut"
  [ "$(kind "$T_WORK/s3" "$f")" = f ] || t_fail "$f is still a database in the manifest"
done
r_verify "$T_WORK/s3"
echo "# header, not name, decides; corrupt databases captured and reported by verify"

# Busy WAL databases: pinning one after another, a commit in between breaks the cut and the
# pins are dropped and taken again (the retry path; it crashed once on non-database entries).
busy=$T_WORK/busywal
mkdir -p "$busy"
writers=()
for i in 1 2 3; do
  sqlite3 "$busy/w$i.sqlite3" 'pragma journal_mode=wal; create table t(v);' >/dev/null
  # (not t_bg: an asynchronous command run inside a function gets /dev/null as its stdin)
  sqlite3 -cmd '.timeout 5000' -cmd 'pragma synchronous=normal;' "$busy/w$i.sqlite3" \
    < <(yes 'insert into t values (randomblob(100));') >/dev/null 2>&1 &
  writers+=("$!"); T_PIDS+=("$!")
done
committing() { (( $(sqlite3 -cmd '.timeout 5000' "$busy/w3.sqlite3" 'select count(*) from t') > 1000 )); }
t_wait_for 20 committing
retries=0
for n in 1 2 3; do
  "$STILLCTL" snapshot "$busy" "$T_WORK/bw$n" >"$T_WORK/bw.out" 2>&1 ||
    { cat "$T_WORK/bw.out" >&2; t_fail "snapshot $n of busy WAL databases failed"; }
  r=$(grep -o '[0-9]* retries' "$T_WORK/bw.out" | cut -d' ' -f1)
  retries=$((retries + ${r:-0}))
  r_verify "$T_WORK/bw$n"
done
kill -TERM "${writers[@]}"
busy_retries=$retries
echo "# busy WAL databases: $retries retries in 3 snapshots, all verified"

# One writer commits row i to a, then row i to b, each its own transaction: at any instant
# a's last row is b's or the one after. A snapshot whose pins straddle a commit breaks that.
pair=$T_WORK/pairwal
mkdir -p "$pair"
for x in a b; do sqlite3 "$pair/$x.sqlite3" 'pragma journal_mode=wal; create table t(v integer);' >/dev/null; done
sqlite3 -cmd '.timeout 5000' -cmd "attach '$pair/b.sqlite3' as b" -cmd 'pragma main.synchronous=normal;' \
  -cmd 'pragma b.synchronous=normal;' "$pair/a.sqlite3" \
  < <(seq 100000000 | awk '{ print "insert into main.t values (" $1 "); insert into b.t values (" $1 ");" }') \
  >/dev/null 2>&1 &
T_PIDS+=("$!")
last_row() { sqlite3 -cmd '.timeout 5000' "$1" 'select coalesce(max(v), 0) from t'; }
# one_instant STORE ROWS N WHAT: once b has ROWS rows, N snapshots of STORE, each holding a at
# b's last row or the next; adds their retries to $retries, then stops the writer.
retries=0
one_instant() {
  local store=$1 what=$4 n r a b
  committing() { (( $(last_row "$store/b.sqlite3") > $1 )); }
  t_wait_for 20 committing "$2"
  for n in $(seq "$3"); do
    "$STILLCTL" snapshot "$store" "$T_WORK/pw" >"$T_WORK/pw.out" 2>&1 ||
      { cat "$T_WORK/pw.out" >&2; t_fail "snapshot $n of $what failed"; }
    r=$(grep -o '[0-9]* retries' "$T_WORK/pw.out" | cut -d' ' -f1)
    retries=$((retries + ${r:-0}))
    a=$(last_row "$T_WORK/pw/a.sqlite3") b=$(last_row "$T_WORK/pw/b.sqlite3")
    ((a == b || a == b + 1)) || t_fail "snapshot $n of $what is not one instant: a ends at row $a, b at row $b"
    r_verify "$T_WORK/pw"
    rm -rf "$T_WORK/pw"
  done
  echo "# $what: $3 snapshots each one instant"
  kill "${T_PIDS[@]}" 2>/dev/null || true; wait "${T_PIDS[@]}" 2>/dev/null || true; T_PIDS=()
}
one_instant "$pair" 1000 5 "two WAL databases written in turn"

# The same, but a's connection is opened and closed around each of its commits: between them a
# has no -wal and no connection, so it is held by its file lock like a rollback database, which
# a connection in WAL mode does not wait for; or the pin's connection finds its -wal gone. Every
# other commit is followed by a checkpoint that empties the -wal while the connection is open.
s=$T_WORK/opening
mkdir -p "$s"
for x in a b; do sqlite3 "$s/$x.sqlite3" 'pragma journal_mode=wal; create table t(v integer);' >/dev/null; done
sqlite3 -cmd '.timeout 5000' "$s/b.sqlite3" \
  < <(seq 100000000 | awk -v a="$s/a.sqlite3" \
        '{ print "attach \047" a "\047 as a; insert into a.t values (" $1 ");" ($1 % 2 ? " pragma a.wal_checkpoint(truncate);" : "") " detach a; insert into main.t values (" $1 ");" }') \
  >/dev/null 2>&1 &
T_PIDS+=("$!")
one_instant "$s" 200 10 "a WAL database opened for each commit beside one kept open"
echo "# busy WAL databases in the last two parts: $retries retries"

# One WAL database whose -wal is emptied by a checkpoint after each commit, then whose last
# connection closes (deleting -wal and -shm) and a new one commits: the capture, started while
# it was busy, must not read it through a connection whose locks it dropped (a stale -shm).
# count.txt is rewritten after each commit: the snapshot's rows are that count (or one more).
s=$T_WORK/truncating
mkdir -p "$s"
python3 - "$s" <<'PY' &
import os, sqlite3, sys, time
store = sys.argv[1]; path = os.path.join(store, "app.sqlite3"); n = 0
def conn():
    c = sqlite3.connect(path, isolation_level=None); c.execute("PRAGMA journal_mode=WAL"); return c
def commit(c):
    global n
    c.execute("INSERT INTO t VALUES (?)", (os.urandom(100),)); n += 1
    with open(os.path.join(store, "count.txt"), "w") as f: f.write(str(n))
c = conn(); c.execute("CREATE TABLE t(x)"); t0 = time.time()
open(os.path.join(store, "started"), "w").close()
while time.time() - t0 < 1.5: commit(c); time.sleep(0.02)
while time.time() - t0 < 2.5: commit(c); c.execute("PRAGMA wal_checkpoint(TRUNCATE)"); time.sleep(0.02)
c.close(); c = conn()
while time.time() - t0 < 3.0: commit(c); time.sleep(0.02)
time.sleep(30)
PY
T_PIDS+=("$!")
t_wait_for 20 test -e "$s/started"
"$STILLCTL" snapshot -q "$s" "$T_WORK/tw" 2>"$T_WORK/tw.err" ||
  { cat "$T_WORK/tw.err" >&2; t_fail "snapshot of a database checkpointed with TRUNCATE failed"; }
rows=$(sqlite3 "$T_WORK/tw/app.sqlite3" 'select count(*) from t') counted=$(cat "$T_WORK/tw/count.txt")
((rows == counted || rows == counted + 1)) ||
  t_fail "the snapshot holds $rows rows of app.sqlite3 but count.txt says $counted (not one instant)"
r_verify "$T_WORK/tw"
echo "# a WAL database emptied by TRUNCATE checkpoints, then reopened: $rows rows, as its count.txt"
# (Whether a given snapshot has to retry depends on the machine's timing; a slow build may see
# writers pause for the whole pin. Over all the busy parts, one must have.)
((busy_retries + retries > 0)) || t_fail "busy WAL databases never made a cut retry (the path is not exercised)"
