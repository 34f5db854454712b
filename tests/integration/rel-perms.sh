#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A snapshot is never more permissive than its source:
# - every mode (setuid, setgid, sticky, 0000 and 0444 included) and owner is copied exactly,
#   for files, databases, directories and the snapshot root, even under umask 000;
# - while a capture is being built, its staging and work directories are 0700;
# - a chmod/chown made while the capture runs, before its cut, is what the snapshot shows
#   (for a database as for a plain file or a directory);
# - an unprivileged user gets the same exact modes for a store of their own, and a clear
#   error naming a directory of it they cannot read.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
store=$T_WORK/store
mkdir -p "$store"/{d700,d711,d555,d2775,d1777,sub}
chmod 700 "$store/d700"; chmod 711 "$store/d711"; chmod 2775 "$store/d2775"; chmod 1777 "$store/d1777"
i=0
for m in 0600 0640 0644 0444 0400 0000 0755 4755 2755 6711 1644; do
  i=$((i + 1))
  echo "file $m" >"$store/f$m"; chmod "$m" "$store/f$m"
  echo "file $m" >"$store/d2775/f$m"; chmod "$m" "$store/d2775/f$m"
done
chown 1234:5678 "$store/f0600" "$store/d700"; chown 1234:1234 "$store/f4755"; chmod 4755 "$store/f4755"
sqlite3 "$store/db600.sqlite3" 'create table t(x); insert into t values (1);'; chmod 600 "$store/db600.sqlite3"
sqlite3 "$store/d700/wal.sqlite3" 'pragma journal_mode=wal; create table t(x); insert into t values (1);' >/dev/null
chmod 640 "$store/d700/wal.sqlite3"; chown 1234:5678 "$store/d700/wal.sqlite3"
chmod 555 "$store/d555"; chmod 750 "$store"

(umask 000; "$STILLCTL" snapshot -q "$store" "$T_WORK/s1") || t_fail "snapshot failed"
r_same_tree "$store" "$T_WORK/s1" "modes or owners differ (umask 000)" "/wal\.sqlite3$"
r_verify "$T_WORK/s1"

# Changes of mode and owner during a capture, before its cut. Top-level entries are read
# first; the big file in sub/ keeps the capture busy after they have been read, and
# --quiet-ms holds the cut 2 s past the last change, so a slow shell still changes them first.
sqlite3 "$store/live.sqlite3" 'create table t(x); insert into t values (1);'; chmod 644 "$store/live.sqlite3"
echo plain >"$store/plain.txt"; chmod 644 "$store/plain.txt"
mkdir "$store/opendir"; chmod 755 "$store/opendir"
(yes 0123456789abcdef || true) | head -c 200M >"$store/sub/big.bin"
(umask 000; exec "$STILLCTL" snapshot -q --quiet-ms 2000 "$store" "$T_WORK/s2") &
snapper=$!
T_PIDS+=("$snapper")
staged() { compgen -G "$T_WORK/.s2.stillfs-tmp.*/sub/big.bin" >/dev/null; }
t_wait_for 60 staged
stage=$(compgen -G "$T_WORK/.s2.stillfs-tmp.*")
work=$(compgen -G "$T_WORK/.s2.stillfs-work.*")
[ "$(stat -c %a "$stage")" = 700 ] || t_fail "staging directory is $(stat -c %a "$stage"), not 700"
[ "$(stat -c %a "$work")" = 700 ] || t_fail "work directory is $(stat -c %a "$work"), not 700"
loose=$(find "$stage" -mindepth 1 -type d ! -perm 700 -printf '%P %m\n' 2>/dev/null | head -3)
[ -z "$loose" ] || t_fail "staging subdirectories not 0700 while building: $loose"
chmod 600 "$store/live.sqlite3"; chown 1234:5678 "$store/live.sqlite3"
chmod 600 "$store/plain.txt"; chmod 700 "$store/opendir"
r_alive "$snapper" || t_log "warning: the capture ended before the changes; the race was not exercised"
wait "$snapper" || t_fail "snapshot during chmod failed"
T_PIDS=()
r_same_tree "$store" "$T_WORK/s2" "the snapshot does not show the modes/owners as of its cut" "/wal\.sqlite3$"
r_verify "$T_WORK/s2"
rm -f "$store/sub/big.bin"

# An unprivileged user snapshotting a store of their own: same exact modes.
chmod 755 "$T_WORK"
mkdir "$T_WORK/u" && cp -a "$store/d2775" "$T_WORK/u/store" && chown -R nobody:nogroup "$T_WORK/u"
chmod 0400 "$T_WORK/u/store/f0000"   # the owner must be able to read it
(umask 000; setpriv --reuid nobody --regid nogroup --clear-groups "$STILLCTL" snapshot -q "$T_WORK/u/store" "$T_WORK/u/snap") ||
  t_fail "unprivileged snapshot failed"
r_same_tree "$T_WORK/u/store" "$T_WORK/u/snap" "modes differ in an unprivileged snapshot"
# A directory this user cannot read: a clear error naming it, exit 4, nothing published.
# (engine-errors.sh covers an unreadable file.)
mkdir -p "$T_WORK/u/store/sub/locked"; echo x >"$T_WORK/u/store/sub/locked/f"; chmod 700 "$T_WORK/u/store/sub/locked"
rc=0; setpriv --reuid nobody --regid nogroup --clear-groups "$STILLCTL" snapshot -q "$T_WORK/u/store" "$T_WORK/u/snap2" 2>"$T_WORK/err" || rc=$?
((rc == 4)) && grep -q "cannot read directory .*/sub/locked: Permission denied" "$T_WORK/err" ||
  { cat "$T_WORK/err" >&2; t_fail "unreadable directory: exit $rc, not named"; }
[ ! -e "$T_WORK/u/snap2" ] || t_fail "a snapshot with an unreadable directory was published"
r_no_leftovers "$T_WORK"; r_no_leftovers "$T_WORK/u"
echo "# modes and owners exact (incl. setuid/setgid/sticky, umask 000, changed mid-capture); staging 0700"
