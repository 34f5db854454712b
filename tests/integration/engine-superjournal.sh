#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A transaction over two rollback-mode databases (ATTACH) whose writer died after writing
# both files and before deleting the super-journal, the commit point: at the cut it has not
# committed, and each database's last commit is the one before it. The hot journals name the
# super-journal by its path in the store; were the copies' recovery to look there after the
# release, an application that recovered the store meanwhile (which deletes it) would make
# the transaction look committed in the snapshot.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${CRASHSHIM:?CRASHSHIM must point to the crashshim shim}"
S=$T_WORK/store
mkdir -p "$S"
for db in db1 db2; do
  sqlite3 "$S/$db" "PRAGMA journal_mode=DELETE; CREATE TABLE t(v); INSERT INTO t VALUES(1);" >/dev/null
done
rc=0
CRASHSHIM_KILL_UNLINK=-mj LD_PRELOAD=$CRASHSHIM sqlite3 "$S/db1" "ATTACH '$S/db2' AS b; BEGIN;
  INSERT INTO t VALUES(2); INSERT INTO b.t VALUES(2); COMMIT;" 2>/dev/null || rc=$?
((rc == 137)) || t_fail "the writer was not stopped at the commit point (exit $rc)"
ls "$S"/db1-mj* >/dev/null 2>&1 && [ -s "$S/db1-journal" ] && [ -s "$S/db2-journal" ] ||
  t_fail "setup: no super-journal and two hot journals: $(ls "$S")"

# Between the release and the recovery of the copies, an application opens both databases:
# it rolls them back and deletes the journals and the super-journal.
recover="sqlite3 '$S/db1' 'SELECT count(*) FROM t' >/dev/null && sqlite3 '$S/db2' 'SELECT count(*) FROM t' >/dev/null"
CRASHSHIM_BEFORE_FINISH=$recover LD_PRELOAD=$CRASHSHIM "$STILLCTL" snapshot -q "$S" "$T_WORK/snap" ||
  t_fail "stillctl snapshot failed"
! ls "$S"/db1-mj* >/dev/null 2>&1 || t_fail "setup: the application's recovery left the super-journal"
[ "$(sqlite3 "$S/db1" 'SELECT max(v) FROM t')" = 1 ] || t_fail "setup: the store's recovery did not roll back"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "the snapshot fails stillctl verify"
for db in db1 db2; do
  [ ! -e "$T_WORK/snap/$db-journal" ] || t_fail "$db-journal in the snapshot"
  v=$(sqlite3 "file:$T_WORK/snap/$db?mode=ro&immutable=1" 'SELECT max(v) FROM t')
  [ "$v" = 1 ] || t_fail "$db in the snapshot holds the uncommitted transaction (rows up to $v)"
done
echo "both databases at their last commit before the cut"

# The same writer stopped right after the commit point (the super-journal deleted, the hot
# journals not yet): committed, so the snapshot holds the transaction.
rm -rf "$S" "$T_WORK/snap"
mkdir -p "$S"
for db in db1 db2; do
  sqlite3 "$S/$db" "PRAGMA journal_mode=DELETE; CREATE TABLE t(v); INSERT INTO t VALUES(1);" >/dev/null
done
rc=0
CRASHSHIM_KILL_UNLINK=db1-journal LD_PRELOAD=$CRASHSHIM sqlite3 "$S/db1" "ATTACH '$S/db2' AS b;
  BEGIN; INSERT INTO t VALUES(2); INSERT INTO b.t VALUES(2); COMMIT;" 2>/dev/null || rc=$?
((rc == 137)) || t_fail "the writer was not stopped after the commit point (exit $rc)"
! ls "$S"/db1-mj* >/dev/null 2>&1 && [ -s "$S/db1-journal" ] ||
  t_fail "setup: a super-journal left, or no journal: $(ls "$S")"
"$STILLCTL" snapshot -q "$S" "$T_WORK/snap" || t_fail "stillctl snapshot failed (committed case)"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "the snapshot fails stillctl verify (committed case)"
for db in db1 db2; do
  v=$(sqlite3 "file:$T_WORK/snap/$db?mode=ro&immutable=1" 'SELECT max(v) FROM t')
  [ "$v" = 2 ] || t_fail "$db in the snapshot misses the committed transaction (rows up to $v)"
done
echo "committed: both databases hold it"
