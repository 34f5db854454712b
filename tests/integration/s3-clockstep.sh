#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A clock stepped back during a capture: the cut then reads as a second before the last upload
# of the previous snapshot. Changed files are dated after that upload instead (uploads_before),
# and so must be the manifest, which changes with every snapshot and often keeps its size: if
# it kept the cut's second, `aws s3 sync` would skip it, and the bucket would pair the new
# files with the old manifest (`stillctl verify` fails on every file that changed).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3-lib.sh"
: "${TIMESHIFT:?TIMESHIFT must point to the clock-step shim}"
s3_require_peers
BUCKET=stillfs
s3_start -- "$BUCKET"
store=$T_WORK/store
mkdir -p "$store"
head -c 4096 /dev/urandom >"$store/f"
"$STILLCTL" snapshot -q "$store" "$T_WORK/snap1"
head -c 4096 /dev/urandom >"$store/f"
"$STILLCTL" snapshot -q --previous "$T_WORK/snap1" "$store" "$T_WORK/snap2"
s3_aws s3 sync --no-progress --delete "$T_WORK/snap2" "s3://$BUCKET/p/" >/dev/null
head -c 4096 /dev/urandom >"$store/f"   # same size
# The clock steps 30 s back 50 ms into the capture (after it noted when uploads ended).
STILLFS_TIMESHIFT="-30@0.05" LD_PRELOAD=$TIMESHIFT \
  "$STILLCTL" snapshot -q --previous "$T_WORK/snap2" "$store" "$T_WORK/snap3" 2>"$T_WORK/err3" || { cat "$T_WORK/err3" >&2;
  t_fail "the capture with a clock step back failed"; }
"$STILLCTL" verify "$T_WORK/snap3" >/dev/null || t_fail "snap3 does not verify"
[ "$(stat -c %s "$T_WORK/snap2/.stillfs-manifest")" = "$(stat -c %s "$T_WORK/snap3/.stillfs-manifest")" ] || { diff "$T_WORK/snap2/.stillfs-manifest" "$T_WORK/snap3/.stillfs-manifest" >&2;
  t_fail "the two manifests differ in size: aws would send the new one whatever its mtime, and this test proves nothing"; }
s3_aws s3 sync --no-progress --delete "$T_WORK/snap3" "s3://$BUCKET/p/" >/dev/null
s3_aws s3 sync --no-progress "s3://$BUCKET/p/" "$T_WORK/dl" >/dev/null
"$STILLCTL" verify "$T_WORK/dl" >"$T_WORK/verify.out" 2>&1 ||
  { cat "$T_WORK/verify.out" >&2; t_fail "after a clock step back during the capture, the synced bucket is not the snapshot (its manifest was skipped?)"; }
echo ok
