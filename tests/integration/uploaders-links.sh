#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A name that becomes another name of an unchanged file. A file with several names is one inode
# in the snapshot, as in the store, so all its names carry one mtime; when the file itself did
# not change, that is the mtime of its earlier copy. If one of its names held other bytes of
# the same size in an earlier snapshot (`ln -f x z/y`), that name keeps an old mtime over new
# bytes: rsync (size and mtime equal) and aws s3 sync (mtime not newer than the upload) skip it
# and the destination keeps the old bytes. Every name whose bytes changed must be dated anew.
# Round 1: z/y, in the previous snapshot, becomes a link to x.
# Round 2: z/w, gone from the previous snapshot (which the uploader never sent) but in the one
#          before it with the same size, comes back as a link to x.
# The same with symbolic links, which aws s3 sync (and rsync -L) follow: the object under the
# link's name gets the target's bytes, and the comparison the target's mtime. `stillctl verify`
# only notes a file where a symlink was; the test compares the bytes.
# Round 3: the symlink L turns from a to b, both unchanged and of the same size.
# Round 4: the directory symlink D turns from da to db, whose files have the same names and
#          sizes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3-lib.sh"
s3_require_peers rsync:rsync
BUCKET=stillfs
s3_start -- "$BUCKET"
store=$T_WORK/store dest=$T_WORK/dest
mkdir -p "$store/z" "$dest"
head -c 4096 /dev/urandom >"$store/x"
head -c 4096 /dev/urandom >"$store/z/y"
head -c 4096 /dev/urandom >"$store/z/w"

upload() {   # SNAPSHOT: rsync it to $dest and aws s3 sync it to the bucket
  rsync -a --delete "$1/" "$dest/"
  s3_aws s3 sync --no-progress --delete "$1" "s3://$BUCKET/p/" >/dev/null
}
check() {    # ROUND WHAT: both destinations are the snapshot just sent
  local dl=$T_WORK/dl.$1
  "$STILLCTL" verify "$dest" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "round $1: rsync's destination is not the snapshot after $2"; }
  s3_aws s3 sync --no-progress "s3://$BUCKET/p/" "$dl" >/dev/null
  "$STILLCTL" verify "$dl" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "round $1: the bucket is not the snapshot after $2"; }
}

"$STILLCTL" snapshot -q "$store" "$T_WORK/snap1"
upload "$T_WORK/snap1"
ln -f "$store/x" "$store/z/y"
"$STILLCTL" snapshot -q --previous "$T_WORK/snap1" "$store" "$T_WORK/snap2"
cmp -s "$T_WORK/snap2/z/y" "$store/x" || t_fail "snap2/z/y is not x's bytes"
upload "$T_WORK/snap2"
check 1 "z/y became a link to x"

rm "$store/z/w"
"$STILLCTL" snapshot -q --previous "$T_WORK/snap2" "$store" "$T_WORK/snap3"   # not uploaded
ln "$store/x" "$store/z/w"
"$STILLCTL" snapshot -q --previous "$T_WORK/snap3" "$store" "$T_WORK/snap4"
upload "$T_WORK/snap4"
check 2 "z/w came back as a link to x"
# Unchanged since: nothing is dated anew again.
"$STILLCTL" snapshot -q --previous "$T_WORK/snap4" "$store" "$T_WORK/snap5"
for n in x z/y z/w; do
  [ "$(stat -c %Y "$T_WORK/snap5/$n")" = "$(stat -c %Y "$T_WORK/snap4/$n")" ] ||
    t_fail "$n did not change, yet the next snapshot dates it anew"
done

# Symbolic links, followed: rsync -L, aws s3 sync.
upload_l() {  # SNAPSHOT
  rsync -aL --delete "$1/" "$dest/"
  s3_aws s3 sync --no-progress --delete "$1" "s3://$BUCKET/p/" >/dev/null
}
check_l() {   # ROUND WHAT SNAPSHOT NAME...: the named paths hold the snapshot's bytes in both
  local r=$1 what=$2 snap=$3 dl=$T_WORK/dl.$1 n; shift 3
  s3_aws s3 sync --no-progress "s3://$BUCKET/p/" "$dl" >/dev/null
  for n in "$@"; do
    diff -r "$snap/$n" "$dest/$n" >/dev/null || t_fail "round $r: rsync -L left stale bytes under $n after $what"
    diff -r "$snap/$n" "$dl/$n" >/dev/null || t_fail "round $r: the bucket holds stale bytes under $n after $what"
  done
}
head -c 4096 /dev/urandom >"$store/a"
head -c 4096 /dev/urandom >"$store/b"
ln -s a "$store/L"
mkdir "$store/da" "$store/db"
head -c 512 /dev/urandom >"$store/da/k"
head -c 512 /dev/urandom >"$store/db/k"
ln -s da "$store/D"
"$STILLCTL" snapshot -q --previous "$T_WORK/snap5" "$store" "$T_WORK/snap6"
upload_l "$T_WORK/snap6"
ln -sfn b "$store/L"
"$STILLCTL" snapshot -q --previous "$T_WORK/snap6" "$store" "$T_WORK/snap7"
upload_l "$T_WORK/snap7"
check_l 3 "L turned from a to b" "$T_WORK/snap7" L
ln -sfn db "$store/D"
"$STILLCTL" snapshot -q --previous "$T_WORK/snap7" "$store" "$T_WORK/snap8"
upload_l "$T_WORK/snap8"
check_l 4 "D turned from da to db" "$T_WORK/snap8" D
"$STILLCTL" verify "$T_WORK/snap8" >/dev/null || t_fail "snap8 does not verify"
echo ok
