#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# An upload that goes on reading an older generation after a newer one was cut. `stillctl
# refresh` during an upload makes a new generation while the uploader holds files of the old
# one open; it reads them, and its objects get their LastModified, after the new generation's
# cut. A file that changed in the new generation is dated in the second of that cut, so the
# next `aws s3 sync` (size equal, mtime not newer than the object) skips it and the bucket keeps
# the old bytes for good. The daemon must not hand that generation to the next uploader as it
# is: the next sync must leave the bucket equal to one snapshot (`stillctl verify`).
# Round "refresh": the late reader holds a file of generation 1 open across the refresh.
# Round "dirhandle": the late reader holds `.snapshot` itself open across the refresh and opens
# the file through it after the new generation's cut (names resolve in the generation that
# handle lists).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3-lib.sh"
: "${STILLFS:?}"
s3_require_peers
BUCKET=stillfs
s3_start -- "$BUCKET"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/sub" "$mnt"
head -c 4096 /dev/urandom >"$store/f"
head -c 4096 /dev/urandom >"$store/sub/g"
# Generations never get old on their own here: only the refresh makes a new one.
t_mount "$store" "$mnt" -o snapshot_max_age=3600,snapshot_linger=2
after_second() { (( $(date +%s) > $1 )); }

sync_up() { s3_aws s3 sync --no-progress --delete "$mnt/.snapshot" "s3://$BUCKET/$1/" >/dev/null; }
check() {   # PREFIX ROUND: the bucket, downloaded, is one snapshot
  local dl=$T_WORK/dl.$2
  rm -rf "$dl"
  s3_aws s3 sync --no-progress "s3://$BUCKET/$1/" "$dl" >/dev/null
  "$STILLCTL" verify "$dl" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "$2: after the late upload and one more sync the bucket is not one snapshot (a changed file was skipped)"; }
  cmp -s "$dl/f" "$store/f" || t_fail "$2: the bucket's f is not the store's"
}

# Round 1: a file of generation 1 stays open across the refresh and is read after it.
sync_up r1
exec 3<"$mnt/.snapshot/f"                   # the upload has opened f (generation 1) ...
head -c 4096 /dev/urandom >"$store/f"        # the application rewrites it, same size
"$STILLCTL" refresh "$mnt" >/dev/null || t_fail "stillctl refresh failed"
m=$(stat -c %Y "$mnt/.snapshot/f")
t_wait_for 5 after_second "$m"
s3_aws s3 cp --no-progress - "s3://$BUCKET/r1/f" <&3 >/dev/null   # ... and sends it now
exec 3<&-
sync_up r1                                   # the next run
check r1 refresh

# Round 2: .snapshot held open across the refresh; f opened through it afterwards.
sync_up r2
exec 4<"$mnt/.snapshot"                      # the uploader lists generation N ...
head -c 4096 /dev/urandom >"$store/f"
"$STILLCTL" refresh "$mnt" >/dev/null || t_fail "stillctl refresh failed"
m=$(stat -c %Y "$mnt/.snapshot/f")
t_wait_for 5 after_second "$m"
# ... and opens f through that listing after the new generation's cut
exec 5<"/proc/$$/fd/4/f"                    # (this shell holds the listing)
s3_aws s3 cp --no-progress - "s3://$BUCKET/r2/f" <&5 >/dev/null
exec 5<&- 4<&-
sync_up r2
check r2 dirhandle
echo ok
