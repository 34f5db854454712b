#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Root's `stillctl snapshot --recycle PREV STORE DEST` moves PREV's copy of each database that
# changed into DEST and writes the live database's pages into it in place. That copy is a file
# a user may already hold open: the copy of a user's own database in root's snapshot is the
# user's (ownership is kept), and a snapshot an uploader keeps in their own directory can be
# one the uploader made. The descriptor outlives the move and the chown/chmod that follow, so
# whatever root writes into the copy - another user's (here root's) 0600 database that now
# lives at that path - is read through it, and whatever the user writes through it lands in
# root's published snapshot.
# 1. legit: root's own earlier snapshot; the user only writes a 1777 directory of the store.
#    Their database there is captured, they open its copy read-write, delete the live one,
#    and root's application makes a private database of the same name.
# 2. uploader: the user owns the directory root's snapshots go to, and hands root an earlier
#    snapshot of their making (stillctl run as the user on a store of theirs with a database
#    at the same path).
# Either way the user must not read the private database, nor change root's snapshot.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLCTL:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v sqlite3 >/dev/null || t_fail "sqlite3 is needed"
t_attacker sfrc
store=$T_WORK/store snaps=$T_WORK/snaps up=$T_WORK/upload loot=$T_WORK/loot
mkdir -p "$store/shared" "$snaps" "$up" "$loot"
chmod 755 "$store" "$snaps" && chmod 1777 "$store/shared"
chown "$user" "$up" "$loot" && chmod 755 "$up" && chmod 700 "$loot"
problems=()

# The root-only database root's application makes at PATH (more than one 1 MiB block, as a
# recycled copy must have); its secret row is printed.
private_db() {
  local secret
  secret=SECRET-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077 && sqlite3 "$1" "create table t(x); insert into t values('$secret');
    create table pad(b); insert into pad values(randomblob(2000000));") ||
    t_fail "setup: cannot make $1"
  echo "$secret"
}
# A user's database of more than one block at PATH.
user_db() {
  as_user sqlite3 "$1" "create table t(y); insert into t values(zeroblob(1500000));" ||
    t_fail "setup: the user cannot make $1"
}
# hold FILE TAG: the user opens FILE read-write and keeps it; when told (go_TAG), reads the
# whole file through that descriptor into $loot/TAG and appends a line to it.
hold() {
  local file=$1 tag=$2
  mkfifo -m 644 "$T_WORK/go_$tag"
  as_user bash -c 'exec 3<>"$1" || exit 1; : >"$2.ready"; read -r _ <"$3"; cat <&3 >"$2"
    printf "written by the user\n" >&3' _ "$file" "$loot/$tag" "$T_WORK/go_$tag" &
  holder=$!
  T_PIDS+=("$holder")
  t_wait_for 20 test -e "$loot/$tag.ready"
}
release() {
  kill -0 "$holder" 2>/dev/null || t_fail "the user's holder of the $1 copy ended early"
  echo go >"$T_WORK/go_$1"
  wait "$holder" || t_fail "the user's holder of the $1 copy failed"
  reld_forget "$holder"
}
# judge TAG SECRET DEST: what the user read and what root's snapshot DEST holds.
judge() {
  local tag=$1 secret=$2 dest=$3
  grep -aq "$secret" "$loot/$tag" &&
    problems+=("$tag: the user read root's 0600 database ($secret) through the descriptor of a copy it held")
  [ "$(sqlite3 "$dest/shared/app.db" 'select x from t' 2>&1)" = "$secret" ] ||
    problems+=("$tag: root's snapshot does not hold the live database: $(sqlite3 "$dest/shared/app.db" 'select x from t' 2>&1)")
  "$STILLCTL" verify "$dest" >"$T_WORK/verify.$tag" 2>&1 ||
    problems+=("$tag: the user changed root's published snapshot: $(head -3 "$T_WORK/verify.$tag")")
}

# 1. legit.
user_db "$store/shared/app.db"
"$STILLCTL" snapshot -q "$store" "$snaps/s1" || t_fail "setup: the first snapshot failed"
hold "$snaps/s1/shared/app.db" legit
as_user rm "$store/shared/app.db" || t_fail "setup: the user cannot remove their database"
secret1=$(private_db "$store/shared/app.db")
as_user cat "$store/shared/app.db" >/dev/null 2>&1 && t_fail "setup: the user can read the private database"
"$STILLCTL" snapshot -q --recycle "$snaps/s1" "$store" "$snaps/s2" >"$T_WORK/out1" 2>&1 ||
  t_fail "root's recycling snapshot failed: $(cat "$T_WORK/out1")"
release legit
judge legit "$secret1" "$snaps/s2"

# 2. uploader.
mkdir -p "$store/up"
chmod 755 "$store/up"
mkdir "$store/up/shared" && chmod 755 "$store/up/shared"
secret2=$(private_db "$store/up/shared/app.db")
as_user mkdir -p "$up/fake/shared" || t_fail "setup: the uploader cannot make a directory"
user_db "$up/fake/shared/app.db"
as_user "$STILLCTL" snapshot -q "$up/fake" "$up/prev" >"$T_WORK/out2u" 2>&1 ||
  t_fail "setup: the uploader's own snapshot failed: $(cat "$T_WORK/out2u")"
hold "$up/prev/shared/app.db" uploader
"$STILLCTL" snapshot -q --recycle "$up/prev" "$store/up" "$up/new" >"$T_WORK/out2" 2>&1 ||
  t_fail "root's recycling snapshot failed: $(cat "$T_WORK/out2")"
release uploader
judge uploader "$secret2" "$up/new"

if [ "${#problems[@]}" -gt 0 ]; then
  printf '%s\n' "${problems[@]}" >&2
  t_fail "${#problems[@]} problems: a copy recycled in place is one a user holds open"
fi
echo "PASS: a recycled copy is never one a user holds open"
