#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# An interrupted upload must be caught, and repaired by the next full sync. Snapshot 1 of a
# store is uploaded whole; the store changes (files rewritten at the same size, files added,
# files removed, databases committed); `aws s3 sync --delete` of snapshot 2 is killed with
# SIGKILL while the server's listing shows it part-way. The bucket's download then holds
# snapshot 2's manifest (aws sends it first: "." sorts first) beside a mix of new files, stale
# ones, missing ones and ones that should have been deleted. `stillctl verify` must exit 1 and
# name exactly those: "missing", "differs" (stale) and "extra". A full sync repairs the bucket:
# its download verifies, passes the torture checker and equals snapshot 2.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3-lib.sh"
: "${TORTURE:?}"
s3_require_peers
N=${S3_INTERRUPT_FILES:-100}   # of each kind: rewritten, added, removed
BUCKET=stillfs
t_log "peers: $(s3_versions)"

store=$T_WORK/store
"$TORTURE" init "$store" >/dev/null
"$TORTURE" write --seconds 0.5 "$store" >/dev/null
mkdir "$store/bulk"
# Interleaved names, so that wherever the sync stops, every kind is on both sides of it.
for k in $(seq -f %03g 0 $((N - 1))); do
  head -c 16384 /dev/urandom >"$store/bulk/k$k-old"
  head -c 16384 /dev/urandom >"$store/bulk/k$k-gone"
done
"$STILLCTL" snapshot -q "$store" "$T_WORK/s1" || t_fail "snapshot 1 failed"

# The CLI's default concurrency, except for the sync to be interrupted below.
s3_start -- "$BUCKET"
s3_aws s3 sync --no-progress --only-show-errors "$T_WORK/s1" "s3://$BUCKET/p/" || t_fail "first sync failed"
s3_aws s3 sync --no-progress --only-show-errors "s3://$BUCKET/p/" "$T_WORK/dl1" || t_fail "download 1 failed"
"$STILLCTL" verify "$T_WORK/dl1" >"$T_WORK/verify1.out" || { cat "$T_WORK/verify1.out" >&2; t_fail "the first full upload does not verify"; }

# The store changes: same-size rewrites (the case an mtime-trusting uploader gets wrong),
# additions, removals, and new commits in both databases and the segment.
for k in $(seq -f %03g 0 $((N - 1))); do
  dd if=/dev/urandom of="$store/bulk/k$k-old" bs=16384 count=1 conv=notrunc status=none
  head -c 16384 /dev/urandom >"$store/bulk/k$k-new"
  rm "$store/bulk/k$k-gone"
done
"$TORTURE" write --seconds 0.5 "$store" >/dev/null
"$STILLCTL" snapshot -q --previous "$T_WORK/s1" "$store" "$T_WORK/s2" || t_fail "snapshot 2 failed"
total=$(find "$T_WORK/s2" -type f | wc -l)

# The sync is started directly (not through a shell function) so that $! is aws itself. One
# request at a time, so that it takes long enough to be caught part-way.
sed 's/^s3 =$/&\n  max_concurrent_requests = 1/' "$AWS_CONFIG_FILE" >"$T_WORK/s3/aws-config-one"
grep -q '^  max_concurrent_requests = 1$' "$T_WORK/s3/aws-config-one" || t_fail "no one-request config"
t_bg env HOME="$S3_HOME" AWS_CONFIG_FILE="$T_WORK/s3/aws-config-one" "$AWS" --endpoint-url "$S3_ENDPOINT" s3 sync --no-progress --delete \
  "$T_WORK/s2" "s3://$BUCKET/p/" >"$T_WORK/sync2.out" 2>&1
sync_pid=${T_PIDS[-1]}
# Part-way: a tenth of the new files are there, and the sync is still running.
part_way() {
  kill -0 "$sync_pid" 2>/dev/null || t_fail "the sync ended before it could be interrupted; raise S3_INTERRUPT_FILES"
  local n; n=$(s3_keys "$BUCKET" p/bulk/ | grep -c -- '-new$' || true)
  ((n >= N / 10))
}
t_wait_for 60 part_way
kill -KILL "$sync_pid"
wait "$sync_pid" 2>/dev/null || true
present=$(s3_keys "$BUCKET" p/bulk/ | grep -c -- '-new$' || true)
t_log "aws s3 sync killed with $present of $N new files uploaded ($(grep -c '^upload:' "$T_WORK/sync2.out" || true) uploads and $(grep -c '^delete:' "$T_WORK/sync2.out" || true) deletions reported)"
((present < N)) || t_fail "every new file was already uploaded: the sync was not interrupted"

dl=$T_WORK/dl2
s3_aws s3 sync --no-progress --only-show-errors "s3://$BUCKET/p/" "$dl" || t_fail "download 2 failed"
cmp -s "$dl/.stillfs-manifest" "$T_WORK/s2/.stillfs-manifest" ||
  t_fail "the download does not hold snapshot 2's manifest; this test expects aws to send it first"

# What verify must say, worked out independently by comparing the download with snapshot 2.
expected=$(
  cd "$T_WORK/s2" || exit 1
  find . -type f ! -name .stillfs-manifest -printf '%P\n' | while read -r f; do
    if [ ! -e "$dl/$f" ]; then echo "missing $f"
    elif ! cmp -s "$f" "$dl/$f"; then echo "differs $f"; fi
  done
  cd "$dl" || exit 1
  find . -type f -printf '%P\n' | while read -r f; do [ -e "$T_WORK/s2/$f" ] || echo "extra $f"; done
)
expected=$(sort <<<"$expected")
rc=0
"$STILLCTL" verify --quick "$dl" >"$T_WORK/verify2.out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$T_WORK/verify2.out" >&2; t_fail "verify of the interrupted upload exited $rc, expected 1"; }
got=$(grep -Ev '^(note: |verify: )' "$T_WORK/verify2.out" | sed 's/: .*//' | sort)
count_of() { grep -c "^$1 " <<<"$2" || true; }
t_log "verify exit 1: $(count_of missing "$got") missing, $(count_of differs "$got") differ (stale), $(count_of extra "$got") extra;" \
      "$(tail -n 1 "$T_WORK/verify2.out")"
grep -E '^differs (chroma|wal)\.sqlite3' "$T_WORK/verify2.out" >&2 || true
if [ "$got" != "$expected" ]; then
  diff <(echo "$expected") <(echo "$got") >&2 || true
  t_fail "verify did not name exactly what is missing, stale or extra (< expected, > reported)"
fi
for kind in missing differs extra; do
  (($(count_of "$kind" "$got") > 0)) || t_fail "the interrupted upload left nothing $kind; the test did not exercise it"
done

# The next full sync repairs it.
s3_aws s3 sync --no-progress --delete "$T_WORK/s2" "s3://$BUCKET/p/" >"$T_WORK/sync3.out" 2>&1 ||
  { cat "$T_WORK/sync3.out" >&2; t_fail "the repairing sync failed"; }
dl=$T_WORK/dl3
s3_aws s3 sync --no-progress --only-show-errors "s3://$BUCKET/p/" "$dl" || t_fail "download 3 failed"
"$STILLCTL" verify "$dl" >"$T_WORK/verify3.out" 2>&1 || { cat "$T_WORK/verify3.out" >&2; t_fail "the repaired bucket does not verify"; }
"$TORTURE" check --strict "$dl" >"$T_WORK/check.out" 2>&1 || { cat "$T_WORK/check.out" >&2; t_fail "the repaired bucket is not consistent"; }
diff -r "$T_WORK/s2" "$dl" >&2 || t_fail "the repaired bucket differs from snapshot 2"
t_log "repairing sync: $(grep -c '^upload:' "$T_WORK/sync3.out" || true) uploads, $(grep -c '^delete:' "$T_WORK/sync3.out" || true) deletions; verify OK, check OK, equal to snapshot 2 ($total files)"
