#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A large store where every stat is slow (a network or FUSE file system, or a loaded machine),
# with one rollback-mode database. At the cut the capture stats every copied file, for the
# writes no event reports; were that sweep made while the database is locked, it would count
# against the hold budget (writers of the database wait for it) and no attempt could finish
# in time: the capture would give up, on a store where nothing changes at all. Here each stat
# takes 0.2 ms more (slowstat shim), so the sweep of 4,000 files takes 0.4 s or more.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${SLOWSTAT:?SLOWSTAT must point to the slowstat shim}"
S=$T_WORK/store
mkdir -p "$S"
for d in $(seq -w 0 39); do
  mkdir "$S/d$d"
  (cd "$S/d$d" && seq 100 | split -l 1 -a 3 -d - f)
done
sqlite3 "$S/app.sqlite3" "PRAGMA journal_mode=DELETE; CREATE TABLE t(v); INSERT INTO t VALUES(42);" >/dev/null
touch -d '-10 seconds' "$S/app.sqlite3" # a store at rest (no racy timestamps)
rc=0
STILLFS_SLOWSTAT_US=200 LD_PRELOAD=$SLOWSTAT "$STILLCTL" snapshot --settle-timeout 20 "$S" "$T_WORK/snap" \
  2>"$T_WORK/err" || rc=$?
((rc == 0)) || { cat "$T_WORK/err" >&2; t_fail "snapshot of a store at rest failed (exit $rc)"; }
cat "$T_WORK/err" >&2
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "the snapshot fails stillctl verify"
[ "$(sqlite3 "file:$T_WORK/snap/app.sqlite3?mode=ro&immutable=1" 'SELECT v FROM t')" = 42 ] ||
  t_fail "the database's copy differs"
n=$(find "$T_WORK/snap" -type f -name 'f*' | wc -l)
((n == 4000)) || t_fail "$n of 4000 files in the snapshot"
echo "4000 files with slow stats and a database: captured"
