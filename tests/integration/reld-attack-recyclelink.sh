#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Root's `stillctl snapshot --recycle DIR STORE DEST` gives DIR up: it moves DIR's copies of
# the databases that changed into DEST and removes DIR's manifest. With DEST and DIR in an
# uploader's directory (stillctl(1)'s rotation, `--recycle /srv/snap.1 STORE /srv/snap.2`, with
# /srv an uploader's), the uploader may put a symlink at
# DIR's name; stillctl opens DIR following it, so root gives up whatever snapshot of the same
# store the symlink names - here one of root's in a 0700 directory (a running daemon's current
# generation in its cache, whose path the status file shows, goes the same way when tried by
# hand: `.snapshot` then lacks the database and the manifest): its database is moved out and its
# manifest deleted. Writes outside DEST that the uploader chose. Root's snapshot there must be
# left whole.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLCTL:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v sqlite3 >/dev/null || t_fail "sqlite3 is needed"
t_attacker sfrl
store=$T_WORK/store private=$T_WORK/private up=$T_WORK/upload
mkdir -p "$store" "$private" "$up"
chmod 755 "$store" && chmod 700 "$private"
chown "$user" "$up" && chmod 755 "$up"
sqlite3 "$store/app.db" "create table t(x); insert into t values('one');
  create table pad(b); insert into pad values(randomblob(2000000));" || t_fail "setup: sqlite3"
"$STILLCTL" snapshot -q "$store" "$private/s0" || t_fail "setup: root's private snapshot failed"
reld_verify "$private/s0" "setup: root's private snapshot"
sqlite3 "$store/app.db" "insert into t values('two')" || t_fail "setup: sqlite3"
as_user ls "$private" >/dev/null 2>&1 && t_fail "setup: the uploader can list root's 0700 directory"
as_user ln -s "$private/s0" "$up/prev" || t_fail "setup: the uploader cannot make a symlink"

"$STILLCTL" snapshot -q --recycle "$up/prev" "$store" "$up/new" >"$T_WORK/out" 2>&1 || true
problems=()
[ -e "$private/s0/.stillfs-manifest" ] ||
  problems+=("root's stillctl deleted the manifest of root's private snapshot the uploader's symlink named")
[ -e "$private/s0/app.db" ] ||
  problems+=("root's stillctl moved the database out of root's private snapshot into $(ls -d "$up"/new 2>/dev/null || echo DEST)")
"$STILLCTL" verify "$private/s0" >"$T_WORK/verify.out" 2>&1 ||
  problems+=("root's private snapshot no longer verifies: $(head -2 "$T_WORK/verify.out")")
if [ "${#problems[@]}" -gt 0 ]; then
  printf '%s\n' "${problems[@]}" >&2
  t_fail "${#problems[@]} problems: --recycle follows a symlink the uploader planted"
fi
echo "PASS: root's --recycle gives up no snapshot an uploader's symlink names"
