#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# End to end with real peers: the torture writer keeps writing a store; snapshots of it are
# uploaded with `aws s3 sync --delete` to s3rver, round after round, the store changing in
# between. After every sync the bucket is downloaded to a fresh folder, which must
#   (a) pass `stillctl verify`,
#   (b) open with sqlite3 from a read-only mount and pass `torture check --strict` there,
#   (c) equal the snapshot exactly (diff -r): aws's size+mtime logic skipped no changed file,
#   (d) have cost exactly the uploads of the files whose digest changed between the two
#       manifests (plus the manifest itself), and the deletions of the files that went away.
# The hazard: before one round a file is rewritten with the same size and its mtime set back
# before the previous sync; it must be uploaded (a control sync of the live folder shows that
# aws skips it there). And no uploaded object may get a LastModified older than its file's
# mtime, or aws would send the unchanged file again next round.
# Variants: "snapshot" uploads `stillctl snapshot --previous` folders; "mount" (when $STILLFS is
# built) uploads MOUNTPOINT/.snapshot of a running stillfs, the generation being captured when
# aws first opens it, as in real use. Only $src differs between them.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3-lib.sh"
: "${TORTURE:?}"
s3_require_peers
ROUNDS=${S3_SYNC_ROUNDS:-4}
HAZARD_ROUND=3     # the hazard file is rewritten just before this round
CHURN_ROUND=4      # a file is deleted and another created just before this round
((ROUNDS >= CHURN_ROUND)) || t_fail "S3_SYNC_ROUNDS must be >= $CHURN_ROUND"
BUCKET=stillfs
LINGER=${S3_SYNC_LINGER:-3}   # mounted variant: seconds a generation stays pinned after use
t_log "peers: $(s3_versions)"

store=$T_WORK/store
"$TORTURE" init "$store" >/dev/null
# Files the writer never touches, for the hazard and for deletions/creations.
mkdir "$store/extra"
head -c 65536 /dev/urandom >"$store/extra/hazard.bin"
echo "deleted before round $CHURN_ROUND" >"$store/extra/gone.txt"
t_bg "$TORTURE" write --persist-interval 1000 "$store"
writer=${T_PIDS[-1]}
persisted() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
t_wait_for 30 persisted

s3_start -- "$BUCKET"

future=()
variants=(snapshot)
if [ -n "${STILLFS:-}" ] && [ -x "$STILLFS" ]; then
  variants+=(mount)
else
  t_log "STILLFS not set or not built: the mounted variant is not run"
fi

# before_round N: what changes in the store besides the writer's work.
# The control: the live folder extra/ synced as it is, so that the hazard is shown to be real
# with these peers (aws skips the rewritten file there).
control_start=
before_round() {
  local i=$1 v=$2 hazard_mtime out
  if ((i == HAZARD_ROUND - 1)) && [ -z "$control_start" ]; then
    control_start=$(date +%s)
    s3_aws s3 sync --no-progress "$store/extra" "s3://$BUCKET/control/" >/dev/null
  fi
  if ((i == HAZARD_ROUND)); then
    # Same size, new bytes, mtime set back to before the previous sync (and the control's)
    # started: a snapshot that kept source mtimes would have aws skip this file forever.
    hazard_mtime=$(( (control_start < last_sync_start ? control_start : last_sync_start) - 2 ))
    dd if=/dev/urandom of="$store/extra/hazard.bin" bs=65536 count=1 conv=notrunc status=none
    touch -d "@$hazard_mtime" "$store/extra/hazard.bin"
    if [ "$v" = snapshot ]; then
      out=$(s3_aws s3 sync --no-progress "$store/extra" "s3://$BUCKET/control/")
      grep -q 'hazard\.bin' <<<"$out" &&
        t_fail "control: aws uploaded the rewritten live file, so the hazard did not reproduce and this test proves nothing"
      t_log "control: aws s3 sync of the live folder skipped the rewritten extra/hazard.bin (same size, old mtime)"
    fi
  fi
  if ((i == CHURN_ROUND)); then
    rm -f "$store/extra/gone.txt"
    echo "created before round $i" >"$store/extra/new.txt"
  fi
}

# check_download DL SNAP ROUND: (a), (b), (c).
check_download() {
  local dl=$1 snap=$2 i=$3 ro=$T_WORK/ro db out
  "$STILLCTL" verify "$dl" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "round $i: the download does not verify"; }
  if [ "$(id -u)" -eq 0 ]; then
    # Root ignores permission bits: only a read-only mount is read-only for root.
    mkdir -p "$ro"
    mount --bind "$dl" "$ro"; T_MOUNTS+=("$ro")
    mount -o remount,bind,ro "$ro"
  else
    chmod -R a-w "$dl"; ro=$dl
  fi
  touch "$ro/probe" 2>/dev/null && t_fail "round $i: $ro is not read-only"
  while read -r db; do
    # A plain open, as an application would: no immutable flag, no mode=ro.
    out=$(sqlite3 "$ro/$db" 'PRAGMA integrity_check; SELECT count(*) >= 0 FROM sqlite_master;' 2>&1) ||
      t_fail "round $i: $db does not open from a read-only folder: $out"
    [ "$out" = $'ok\n1' ] || t_fail "round $i: $db from a read-only folder: $out"
  done < <(mf_dbs "$dl/.stillfs-manifest")
  "$TORTURE" check --strict "$ro" >"$T_WORK/check.out" 2>&1 ||
    { cat "$T_WORK/check.out" >&2; t_fail "round $i: the download is not consistent"; }
  if [ "$ro" != "$dl" ]; then umount "$ro"; unset 'T_MOUNTS[-1]'; else chmod -R u+w "$dl"; fi
  diff -r "$snap" "$dl" >"$T_WORK/diff.out" 2>&1 ||
    { cat "$T_WORK/diff.out" >&2; t_fail "round $i: the download differs from the snapshot (a changed file was skipped?)"; }
}

count() { grep -c . <<<"$1" || true; }
unpinned() { [ "$(t_status "$1" pinned)" != yes ]; }

run_variant() {
  local v=$1 prefix=$1 i src snap prev="" prev_mf=/dev/null dl
  local expect_up expect_del got_up got_del nfiles summary="" now newest
  local mnt=$T_WORK/mnt hold stale
  if [ "$v" = mount ]; then
    # As users run it: the sync's own first look at .snapshot captures the generation
    # (max_age 0), and linger keeps it for the whole sync and for our copy right after.
    mkdir -p "$mnt"
    t_mount "$store" "$mnt" -o "snapshot_max_age=0,snapshot_linger=$LINGER"
  fi
  for i in $(seq 1 "$ROUNDS"); do
    before_round "$i" "$v"
    snap=$T_WORK/$v-snap$i
    case $v in
      snapshot)
        "$STILLCTL" snapshot -q ${prev:+--previous "$prev"} "$store" "$snap" || t_fail "round $i: snapshot failed"
        src=$snap ;;
      mount)
        # The previous generation must be unpinned, or this sync would be served it again.
        t_wait_for $((LINGER + 30)) unpinned "$mnt"
        src=$mnt/.snapshot ;;
    esac
    if [ "$v" = snapshot ]; then
      # An uploader may start the moment a snapshot is there. S3 (and s3rver) record
      # LastModified in whole seconds, truncated: an object uploaded now gets floor(now), and
      # if that is older than the file's mtime, aws sends the file again next time although
      # it did not change. So once handed out, no mtime may be newer than floor(now).
      # Deterministic, unlike the upload count below, which catches it only when the upload
      # happens to fall in the same second as the cut.
      now=$(date +%s.%N)
      newest=$(find "$src" -type f -printf '%T@\n' | sort -n | tail -n 1)
      if [ "$(echo "$newest > ${now%.*}" | bc)" = 1 ]; then
        future+=("$v round $i: handed out at $now with an mtime of $newest, newer than the LastModified (${now%.*}) of an upload right now")
      fi
    fi
    last_sync_start=$(date +%s)
    s3_aws s3 sync --no-progress --delete "$src" "s3://$BUCKET/$prefix/" >"$T_WORK/sync.out" 2>&1 ||
      { cat "$T_WORK/sync.out" >&2; t_fail "round $i: aws s3 sync failed"; }
    if [ "$v" = mount ]; then
      # Keep the generation the sync read (pinned by an open handle, taken within its linger)
      # to compare with.
      exec {hold}<"$src/.stillfs-manifest"
      cp -a "$src" "$snap"
      exec {hold}<&-
    fi
    dl=$T_WORK/dl-$v-$i
    s3_aws s3 sync --no-progress "s3://$BUCKET/$prefix/" "$dl" >/dev/null 2>"$T_WORK/dl.err" ||
      { cat "$T_WORK/dl.err" >&2; t_fail "round $i: download failed"; }
    [ "$(mf_id "$dl/.stillfs-manifest")" = "$(mf_id "$snap/.stillfs-manifest")" ] ||
      t_fail "$v round $i: the uploaded snapshot $(mf_id "$dl/.stillfs-manifest") is not the one kept for comparison, $(mf_id "$snap/.stillfs-manifest")"
    check_download "$dl" "$snap" "$i"

    # (d) Uploads and deletions against what the manifests say changed.
    expect_up=$( { comm -13 <(mf_files "$prev_mf") <(mf_files "$snap/.stillfs-manifest") | cut -d' ' -f1; echo .stillfs-manifest; } | sort)
    expect_del=$(comm -23 <(mf_files "$prev_mf" | cut -d' ' -f1) <(mf_files "$snap/.stillfs-manifest" | cut -d' ' -f1))
    got_up=$(sed -n "s#^upload: .* to s3://$BUCKET/$prefix/##p" "$T_WORK/sync.out" | sort)
    got_del=$(sed -n "s#^delete: s3://$BUCKET/$prefix/##p" "$T_WORK/sync.out" | sort)
    nfiles=$(mf_files "$snap/.stillfs-manifest" | wc -l)
    t_log "$v round $i: snapshot $(mf_id "$snap/.stillfs-manifest"), $((nfiles + 1)) files;" \
          "uploaded $(count "$got_up") (changed per manifests: $(count "$expect_up")," \
          "unchanged: $((nfiles + 1 - $(count "$expect_up"))));" \
          "deleted $(count "$got_del") (expected $(count "$expect_del")); verify OK, read-only open OK, check OK, diff OK"
    if [ "$got_up" != "$expect_up" ]; then
      echo "uploaded but unchanged: $(comm -23 <(echo "$got_up") <(echo "$expect_up") | tr '\n' ' ')" >&2
      echo "changed but not uploaded: $(comm -13 <(echo "$got_up") <(echo "$expect_up") | tr '\n' ' ')" >&2
      grep -E "^(upload|delete):" "$T_WORK/sync.out" >&2 || true
      ((${#future[@]} == 0)) || printf 'earlier: %s\n' "${future[@]}" >&2
      t_fail "$v round $i: the uploads are not exactly the changed files"
    fi
    [ "$got_del" = "$expect_del" ] || t_fail "$v round $i: deleted [$got_del], expected [$expect_del]"
    if ((i == HAZARD_ROUND)); then
      grep -qx extra/hazard.bin <<<"$got_up" || t_fail "$v round $i: the same-size file with an old mtime was not uploaded"
    fi
    if ((i == CHURN_ROUND)); then
      grep -qx extra/new.txt <<<"$got_up" || t_fail "$v round $i: the new file was not uploaded"
      grep -qx extra/gone.txt <<<"$got_del" || t_fail "$v round $i: the removed file was not deleted"
    fi
    summary+=" $(count "$got_up")"
    # Every object uploaded this round must carry a LastModified no older than its file's
    # mtime; otherwise aws will send the unchanged file again next round.
    stale=$(s3_lastmod "$BUCKET" "$prefix/" | UP=$got_up awk '
      BEGIN { n = split(ENVIRON["UP"], u, "\n"); for (k = 1; k <= n; k++) want[u[k]] = 1 }
      FNR == NR { lm[$1] = $2; next }
      p && ($1 == "f" || $1 == "s") && ($9 in want) && ($9 in lm) && lm[$9] * 1e9 < $6 {
        printf "%s (mtime %.3f, LastModified %d) ", $9, $6 / 1e9, lm[$9] }
      $0 == "." { p = 1 }' - "$snap/.stillfs-manifest")
    [ -z "$stale" ] || future+=("$v round $i: uploaded with LastModified older than the file's mtime, so they will be sent again: $stale")

    # Keep only the previous snapshot (the next --previous and manifest comparison).
    [ -n "$prev" ] && rm -rf "$prev"
    prev=$snap prev_mf=$snap/.stillfs-manifest
    rm -rf "$dl"
  done
  if [ "$v" = mount ]; then
    t_unmount "$mnt"
    t_log_clean "$T_DAEMON_LOG"
  fi
  echo "# $v: $ROUNDS syncs, files uploaded per round:$summary; every download verified, opened read-only, passed the checker and equalled its snapshot"
}

for v in "${variants[@]}"; do
  # The churn files must exist again for the next variant's rounds to mean the same thing.
  echo "deleted before round $CHURN_ROUND" >"$store/extra/gone.txt"
  rm -f "$store/extra/new.txt"
  run_variant "$v"
done
kill -TERM "$writer"; wait "$writer" || t_fail "torture writer failed"
if ((${#future[@]})); then
  printf '%s\n' "${future[@]}" >&2
  t_fail "unchanged files would be uploaded again: snapshot mtimes newer than the LastModified of their uploads (${#future[@]} findings above)"
fi
