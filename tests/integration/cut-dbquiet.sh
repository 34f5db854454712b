#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A rollback-mode database committed to without an inotify event in the store: through a
# second name outside the store, made for the commit and removed before the cut (so the
# database has one name again when the cut looks). A root daemon's handle-reopened files, an
# NFS server's writes and AIO are other such paths. The early, unlocked copy of the database
# must not be trusted for the cut just because no event came: count.txt, written after the
# commit, says which rows the database held before it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
S=$T_WORK/store
O=$T_WORK/outside
mkdir -p "$S" "$O"
sqlite3 "$S/db.sqlite3" "PRAGMA journal_mode=DELETE; CREATE TABLE t(v INTEGER);
  INSERT INTO t VALUES(1);" >/dev/null
echo 1 >"$S/count.txt"

# A file changing every 50 ms keeps the capture from its quiet window until stop appears.
churn() { while [ ! -e "$T_WORK/stop" ]; do date +%s%N >"$S/churn.txt"; sleep 0.05; done; }
t_bg churn

rc_file=$T_WORK/snap.rc
capture() { local rc=0; "$STILLCTL" snapshot -q "$S" "$T_WORK/snap" 2>"$T_WORK/snap.err" || rc=$?; echo "$rc" >"$rc_file"; }
t_bg capture
# The capture's early copy of the database is complete.
staged() { local f; for f in "$T_WORK"/.snap.stillfs-tmp.*/db.sqlite3; do cmp -s "$f" "$S/db.sqlite3" && return 0; done; return 1; }
t_wait_for 30 staged

ln "$S/db.sqlite3" "$O/db.sqlite3"
sqlite3 "$O/db.sqlite3" "INSERT INTO t VALUES(2);"
rm "$O/db.sqlite3"
echo 2 >"$S/count.txt"
touch "$T_WORK/stop"
t_wait_for 60 test -s "$rc_file"
rc=$(cat "$rc_file")
case $rc in
  0)
    count=$(cat "$T_WORK/snap/count.txt")
    rows=$(sqlite3 "$T_WORK/snap/db.sqlite3" "SELECT max(v) FROM t;")
    "$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "the snapshot fails stillctl verify"
    ((rows >= count)) || t_fail "published but torn: count.txt says $count, the database holds rows up to $rows (its copy predates a commit made before count.txt was written)"
    echo "published: count.txt $count, database rows up to $rows"
    ;;
  3) [ ! -e "$T_WORK/snap" ] || t_fail "exit 3 but the snapshot exists"; t_fail "no cut: $(cat "$T_WORK/snap.err")" ;;
  *) t_fail "stillctl snapshot exited $rc: $(cat "$T_WORK/snap.err")" ;;
esac
