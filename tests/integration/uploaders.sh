#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Backup tools that decide for themselves what to skip, pointed at MOUNTPOINT/.snapshot of a
# running stillfs while the torture writer writes the store: restic (backup to a local
# repository, restore latest), rclone (sync to s3rver, then sync the bucket down into the same
# folder every time: its skip logic runs both ways) and borg (create, extract). Four
# generations in a row, each forced with `stillctl refresh`; every tool backs up each one, and
# after every backup the restored copy must
#   (a) hold that generation's manifest and pass `stillctl verify` (every file's digest),
#   (b) pass `torture check --strict`,
#   (c) equal a plain copy of the generation (diff -r),
# and the tool must have read again every file whose digest changed (restic and rclone: only
# those). The snapshot shows ctime = mtime, so restic (mtime, ctime, size, inode) and borg
# (files cache: ctime, size, inode) decide on mtime, size and inode, rclone on size and
# mtime. Before every generation after the first, a file the writer never touches is
# rewritten at the same size and its mtime set back exactly; the writer's own files change at
# the same size too.
# A tool run less often than generations are made (restic with --parent its backup of
# generation 2, borg into a repository that got only generation 2) backs up the last
# generation, whose copy of a database changed at the same size is generation 2's, recycled:
# the inode and size they recorded come back, only the mtime tells them.
# Negative control, per tool: a plain folder holding generation 1 is backed up, generation 2's
# bytes are written over it in place with every mtime kept, and it is backed up again with
# ctime ignored, as the snapshot's is its mtime: the tool keeps the stale same-size files, and
# verify names exactly those.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3-lib.sh"
: "${TORTURE:?}" "${STILLFS:?}"
s3_require_peers restic:restic rclone:rclone borg:borgbackup
ROUNDS=4   # borg's files cache is in play from the third
TOOLS=(restic rclone borg)
BUCKET=stillfs
PROBE=static/deep/b.bin      # never written: a tool that sends it again is not skipping at all
HAZARD=extra/hazard.bin
FIXED=extra/fixed.sqlite3    # a database the writer never touches, changed at the same size
t_log "peers: restic $(restic version | cut -d' ' -f2), rclone $(rclone version | sed -n '1s/^rclone //p'), $(borg --version), $(s3_versions)"

store=$T_WORK/store mnt=$T_WORK/mnt
snap=$mnt/.snapshot
"$TORTURE" init "$store" >/dev/null
mkdir "$store/extra" "$mnt"
head -c 65536 /dev/urandom >"$store/$HAZARD"
touch -r "$store/$HAZARD" "$T_WORK/hazard.mtime"
sqlite3 "$store/$FIXED" "create table t(k integer primary key, v blob);
  with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000)
  insert into t select i, randomblob(1000) from n;"
t_bg "$TORTURE" write --persist-interval 1000 "$store" >"$T_WORK/writer.out" 2>&1
writer=${T_PIDS[-1]}
persisted() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
t_wait_for 30 persisted
s3_start -- "$BUCKET"
# Generations change only by `stillctl refresh`: each round's tools all read the same one. No
# linger: the generation before goes at once and is the spare, so databases are recycled (the
# copy of two generations back patched in place: its inode comes back, only mtimes tell).
t_mount "$store" "$mnt" -o snapshot_max_age=3600,snapshot_linger=0

# Every tool's configuration, cache and repository under T_WORK.
export RESTIC_REPOSITORY=$T_WORK/restic RESTIC_PASSWORD=stillfs-test RESTIC_CACHE_DIR=$T_WORK/restic-cache
export BORG_REPO=$T_WORK/borg BORG_BASE_DIR=$T_WORK/borg-base BORG_PASSPHRASE='' \
       BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export RCLONE_CONFIG=$T_WORK/rclone.conf RCLONE_CACHE_DIR=$T_WORK/rclone-cache \
       RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other RCLONE_CONFIG_S3_ENDPOINT=$S3_ENDPOINT \
       RCLONE_CONFIG_S3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
       RCLONE_CONFIG_S3_REGION=us-east-1 RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true
: >"$RCLONE_CONFIG"
restic init -q >/dev/null || t_fail "restic init failed"
borg init -e none || t_fail "borg init failed"
SPARSE=$T_WORK/borg-sparse   # a borg repository that gets generations 2 and ROUNDS only
BORG_REPO=$SPARSE borg init -e none || t_fail "borg init failed"

# backup TOOL SRC NAME-N [OPTION...]: back SRC up with the tool's own skip logic, as borg
# archive NAME-N, into rclone's prefix NAME; its log in $T_WORK/TOOL.out.
backup() {
  local tool=$1 src=$2 name=$3
  shift 3
  case $tool in
    restic) restic backup -vv "$@" "$src" ;;
    rclone) rclone sync -v "$@" "$src" "s3:$BUCKET/${name%-*}" ;;
    borg)   (cd "$src" && borg create --list "$@" "::$name" .) ;;
  esac >"$T_WORK/$tool.out" 2>&1 || { cat "$T_WORK/$tool.out" >&2; t_fail "$tool: backup of $src failed"; }
}
# The options with which each tool ignores ctime (under .snapshot, ctime is the mtime).
declare -A NO_CTIME=([restic]=--ignore-ctime [rclone]='' [borg]='--files-cache=mtime,size,inode')
# restore TOOL SRC NAME-N DEST: the latest backup of SRC into DEST (rclone: synced into what
# DEST already holds; its log in $T_WORK/rclone-down.out).
restore() {
  local tool=$1 src=$2 name=$3 dest=$4
  case $tool in
    restic) restic restore -q latest --path "$src" --target "$dest.r" &&
            mv "$dest.r$src" "$dest" && rm -r "$dest.r" ;;
    rclone) rclone sync -v "s3:$BUCKET/${name%-*}" "$dest" >"$T_WORK/rclone-down.out" 2>&1 ;;
    borg)   mkdir "$dest" && (cd "$dest" && borg extract "::$name") ;;
  esac || t_fail "$tool: restore of $name failed"
}
# sent TOOL SRC [LOG]: the files the last backup of SRC read and stored, sorted.
sent() {
  local tool=$1 src=${2//./\\.} log=${3:-$T_WORK/$1.out}
  case $tool in
    restic) sed -En "s#^(new|modified) +$src/(.*[^/]), saved in .*#\\2#p" "$log" ;;
    rclone) sed -En 's#.*INFO  : (.*): Copied \((new|replaced existing)\)$#\1#p' "$log" ;;
    borg)   sed -En 's#^[AM] (.*)#\1#p' "$log" ;;
  esac | sort
}
# changed PREV_MANIFEST MANIFEST: the files whose digest changed (or that are new), and the
# manifest itself.
changed() { { comm -13 <(mf_files "$1") <(mf_files "$2") | cut -d' ' -f1; echo .stillfs-manifest; } | sort; }
# same_size PREV_MANIFEST MANIFEST: the files rewritten at the same size.
same_size() { join <(mf_files "$1") <(mf_files "$2") | awk '$2 == $4 && $3 != $5 { print $1 }'; }
# check_copy DIR ROUND WHAT: (a), (b) and (c).
check_copy() {
  local dir=$1 i=$2 what=$3
  [ "$(mf_id "$dir/.stillfs-manifest")" = "${ids[i]}" ] ||
    t_fail "$what: the copy holds snapshot $(mf_id "$dir/.stillfs-manifest"), not generation $i's ${ids[i]}"
  "$STILLCTL" verify "$dir" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "$what: the restored copy does not verify"; }
  "$TORTURE" check --strict "$dir" >"$T_WORK/check.out" 2>&1 ||
    { cat "$T_WORK/check.out" >&2; t_fail "$what: the restored copy is not consistent"; }
  diff -r "$T_WORK/gen$i" "$dir" >"$T_WORK/diff.out" 2>&1 ||
    { cat "$T_WORK/diff.out" >&2; t_fail "$what: the restored copy differs from generation $i"; }
}
# setdiff A B: the lines of A not in B (both sorted).
setdiff() { comm -23 <(echo "$1") <(echo "$2") | grep . | tr '\n' ' ' || true; }
count() { grep -c . <<<"$1" || true; }

ids=("") inos=("") rsnaps=("")
declare -A spent
for tool in "${TOOLS[@]}"; do spent[$tool]=0; done
prev_mf=/dev/null
for i in $(seq 1 "$ROUNDS"); do
  if ((i > 1)); then
    # New bytes at the same size, and the mtime it had before any backup.
    dd if=/dev/urandom of="$store/$HAZARD" bs=65536 count=1 conv=notrunc status=none
    touch -r "$T_WORK/hazard.mtime" "$store/$HAZARD"
    # Not before generation 2: shared with generation 1, its copy is recycled for the last.
    ((i > 2)) && sqlite3 "$store/$FIXED" "update t set v = randomblob(1000) where k = $i;"
    # The generation two back must be the spare, whatever the daemon's pace.
    retired() { (($(t_status "$mnt" generations_deleted) >= i - 2)); }
    t_wait_for 20 retired
  fi
  "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" || t_fail "round $i: stillctl refresh failed"
  gen=$(t_status "$mnt" generation)
  ids[i]=$(t_status "$mnt" id)
  cp -a "$snap" "$T_WORK/gen$i"      # what the restores must equal
  inos[i]=$(stat -c %i "$snap/$FIXED")
  mf=$T_WORK/gen$i/.stillfs-manifest
  [ "$(mf_id "$mf")" = "${ids[i]}" ] || t_fail "round $i: .snapshot is not generation $gen"
  want=$(changed "$prev_mf" "$mf")
  same=$(same_size "$prev_mf" "$mf")
  if ((i > 1)); then
    grep -qx "$HAZARD" <<<"$same" || t_fail "round $i: test bug: $HAZARD is not among the same-size changes"
    grep -qx "$PROBE" <<<"$want" && t_fail "round $i: test bug: $PROBE changed"
  fi
  for tool in "${TOOLS[@]}"; do
    t0=$EPOCHREALTIME
    backup "$tool" "$snap" "snap-$i"
    got=$(sent "$tool" "$snap")
    [ "$tool" = restic ] && rsnaps[i]=$(sed -n 's/^snapshot \([0-9a-f]*\) saved$/\1/p' "$T_WORK/restic.out")
    dest=$T_WORK/restored-$tool
    [ "$tool" = rclone ] || rm -rf "$dest"
    restore "$tool" "$snap" "snap-$i" "$dest"
    spent[$tool]=$(echo "${spent[$tool]} + $EPOCHREALTIME - $t0" | bc)
    check_copy "$dest" "$i" "$tool round $i"
    missed=$(setdiff "$want" "$got")
    [ -z "$missed" ] || t_fail "$tool round $i: skipped changed files: $missed"
    if ((i > 1)); then
      # borg does not cache the files as new as the newest it saw: after generation 1, where
      # every file has the first cut's mtime, that is all of them.
      if [ "$tool" != borg ] || ((i > 2)); then
        grep -qx "$PROBE" <<<"$got" && t_fail "$tool round $i: read the unchanged $PROBE again: its skip logic is not in play"
      fi
      if [ "$tool" != borg ]; then
        # borg reads the files that changed in the generation before once more (see above):
        # only restic and rclone can be held to "exactly the changed files".
        resent=$(setdiff "$got" "$want")
        [ -z "$resent" ] || t_fail "$tool round $i: sent unchanged files again: $resent"
      fi
      if [ "$tool" = rclone ]; then
        down=$(sent rclone "$snap" "$T_WORK/rclone-down.out")
        [ "$down" = "$want" ] ||
          t_fail "rclone round $i: the download fetched [$(tr '\n' ' ' <<<"$down")], the changed files are [$(tr '\n' ' ' <<<"$want")]"
      fi
    fi
    t_log "$tool round $i: generation $gen, read $(count "$got") files (digest changed: $(count "$want")," \
          "same size: $(count "$same")); the restore verifies, passes the checker, equals the generation"
  done
  ((i == 2)) && BORG_REPO=$SPARSE backup borg "$snap" "snap-$i"
  [ "$(t_status "$mnt" generation)" = "$gen" ] || t_fail "round $i: the generation changed under the tools"
  prev_mf=$mf
done

# ---- a backup that skipped generations ------------------------------------------------------
# restic against its backup of generation 2 (--parent), borg into a repository that got only
# generation 2: the last generation's copy of $FIXED is generation 2's, recycled from the spare
# and patched in place. The same inode and size as they recorded; only the mtime differs.
[ "${inos[ROUNDS]}" = "${inos[2]}" ] ||
  t_fail "test bug: $FIXED in generation $ROUNDS is inode ${inos[ROUNDS]}, not generation 2's ${inos[2]}: not recycled"
mf2=$T_WORK/gen2/.stillfs-manifest
grep -qx "$FIXED" <<<"$(same_size "$mf2" "$mf")" || t_fail "test bug: $FIXED did not change at the same size"
want=$(changed "$mf2" "$mf")
for tool in restic borg; do
  dest=$T_WORK/restored-$tool
  rm -rf "$dest"
  if [ "$tool" = restic ]; then
    backup restic "$snap" "snap-$ROUNDS" --parent "${rsnaps[2]}"
    restore restic "$snap" "snap-$ROUNDS" "$dest"
  else
    BORG_REPO=$SPARSE backup borg "$snap" "snap-$ROUNDS"
    BORG_REPO=$SPARSE restore borg "$snap" "snap-$ROUNDS" "$dest"
  fi
  check_copy "$dest" "$ROUNDS" "$tool from generation 2 to $ROUNDS"
  got=$(sent "$tool" "$snap")
  missed=$(setdiff "$want" "$got")
  [ -z "$missed" ] || t_fail "$tool from generation 2 to $ROUNDS: skipped changed files: $missed"
  grep -qx "$PROBE" <<<"$got" && t_fail "$tool from generation 2 to $ROUNDS: read the unchanged $PROBE again: its skip logic is not in play"
  t_log "$tool from generation 2 to $ROUNDS: read $(count "$got") files (digest changed: $(count "$want")," \
        "$FIXED among them, at its inode of generation 2); the restore verifies, passes the checker, equals the generation"
done

# ---- negative control ---------------------------------------------------------------------
# overlay SRC DIR: write SRC's files into DIR in place (same inode), each keeping DIR's mtime
# (the manifest excepted: it is dated anew, as stillfs does); files DIR lacks are copied.
overlay() {
  local src=$1 dir=$2 f
  while IFS= read -r f; do
    if [ -f "$dir/$f" ] && [ "$f" != .stillfs-manifest ]; then
      touch -r "$dir/$f" "$T_WORK/mtime.ref"
      cat "$src/$f" >"$dir/$f"
      touch -r "$T_WORK/mtime.ref" "$dir/$f"
    else
      mkdir -p "$(dirname "$dir/$f")"
      cat "$src/$f" >"$dir/$f"
    fi
  done < <(cd "$src" && find . -type f -printf '%P\n')
}
stale=$(same_size "$T_WORK/gen1/.stillfs-manifest" "$T_WORK/gen2/.stillfs-manifest")
for tool in "${TOOLS[@]}"; do
  fake=$T_WORK/fake-$tool dl=$T_WORK/ctl-$tool
  cp -a "$T_WORK/gen1" "$fake"
  # Older than the manifest: borg does not cache the newest files it saw.
  find "$fake" -type f -exec touch -d "@$((EPOCHSECONDS - 100))" {} +
  touch -d "@$((EPOCHSECONDS - 50))" "$fake/.stillfs-manifest"
  # shellcheck disable=SC2086 # an empty option is none
  backup "$tool" "$fake" ctl-1 ${NO_CTIME[$tool]}
  overlay "$T_WORK/gen2" "$fake"
  # shellcheck disable=SC2086
  backup "$tool" "$fake" ctl-2 ${NO_CTIME[$tool]}
  restore "$tool" "$fake" ctl-2 "$dl"
  rc=0; "$STILLCTL" verify "$dl" >"$T_WORK/verify.out" 2>&1 || rc=$?
  [ "$rc" -eq 1 ] || { cat "$T_WORK/verify.out" >&2; t_fail "control: $tool: verify exited $rc on a copy with stale files, expected 1"; }
  differs=$(sed -n 's/^differs \([^:]*\):.*/\1/p' "$T_WORK/verify.out" | sort)
  [ "$differs" = "$stale" ] ||
    { cat "$T_WORK/verify.out" >&2; t_fail "control: $tool: verify names [$(tr '\n' ' ' <<<"$differs")], the stale same-size files are [$(tr '\n' ' ' <<<"$stale")]"; }
  while IFS= read -r f; do
    cmp -s "$dl/$f" "$T_WORK/gen1/$f" || t_fail "control: $tool: $f is neither stale nor right"
  done <<<"$stale"
  t_log "control: $tool kept $(count "$stale") same-size files of generation 1 whose mtime did not move ($(tr '\n' ' ' <<<"$stale")); verify names exactly those"
done

kill -TERM "$writer"; wait "$writer" || t_fail "the torture writer failed: $(cat "$T_WORK/writer.out")"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# uploaders: $ROUNDS generations backed up by each tool under the writer, each restore verified," \
     "checked and equal to its generation; seconds spent backing up and restoring:" \
     "restic ${spent[restic]}, rclone ${spent[rclone]}, borg ${spent[borg]}"
