#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Snapshots on filesystems that share extents (XFS with reflink, btrfs), store and snapshots on
# one loop-mounted filesystem: consecutive incremental snapshots under the torture writer must
# all be consistent and verify, and the copies must be clones: bytes_cloned in the manifests,
# shared extents (filefrag) in the snapshot's files and its database, and little space used.
source "$(dirname "$0")/lib.sh"
: "${TORTURE:?}"
N=${ENGINE_REFLINK_SNAPSHOTS:-6}
[ "$(id -u)" -eq 0 ] || { echo "SKIP: loop mounts need root" >&2; exit 77; }
for t in mkfs.xfs mkfs.btrfs filefrag losetup; do
  command -v "$t" >/dev/null || { echo "SKIP: $t is missing (xfsprogs, btrfs-progs: scripts/setup.sh)" >&2; exit 77; }
done
grep -qw xfs /proc/filesystems || modprobe xfs 2>/dev/null || true
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true

# run FS: make a fresh filesystem of that kind on a loop device and run the writer against it.
run() {
  local fs=$1 img=$T_WORK/$1.img mnt=$T_WORK/$1
  truncate -s 1G "$img"
  case $fs in
    xfs) mkfs.xfs -q -f -m reflink=1 "$img" ;;
    btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
  esac
  mkdir -p "$mnt"
  T_MOUNTS+=("$mnt")
  # One loop device set up at a time, machine-wide: two setups at once race for the same free
  # device (this test runs beside others, and sanitize.sh runs it beside this one).
  flock /tmp/stillfs-test-loopdev.lock mount -o loop "$img" "$mnt" ||
    { echo "SKIP: cannot loop-mount $fs" >&2; exit 77; }
  local store=$mnt/store
  "$TORTURE" init "$store" >/dev/null
  t_bg "$TORTURE" write --persist-interval 1000 "$store"
  local writer=${T_PIDS[-1]}
  persisted() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
  t_wait_for 30 persisted
  local prev=() cloned=0 copied=0 max_lock=0 i snap
  for i in $(seq 1 "$N"); do
    snap=$mnt/snap$i
    "$STILLCTL" snapshot -q "${prev[@]}" "$store" "$snap" || t_fail "$fs: snapshot $i failed"
    "$TORTURE" check --strict "$snap" >"$T_WORK/check.out" 2>&1 || { cat "$T_WORK/check.out" >&2; t_fail "$fs: snapshot $i is not consistent"; }
    "$STILLCTL" verify "$snap" >"$T_WORK/verify.out" || { cat "$T_WORK/verify.out" >&2; t_fail "$fs: snapshot $i does not verify"; }
    cloned=$((cloned + $(awk '$1=="bytes_cloned"{print $2}' "$snap/.stillfs-manifest")))
    copied=$((copied + $(awk '$1=="bytes_copied"{print $2}' "$snap/.stillfs-manifest")))
    local lock; lock=$(awk '$1=="lock_max_s"{print $2}' "$snap/.stillfs-manifest")
    max_lock=$(echo "if ($lock > $max_lock) $lock else $max_lock" | bc)
    prev=(--previous "$snap")
  done
  kill -TERM "$writer"; wait "$writer" || t_fail "$fs: torture writer failed"
  T_PIDS=()
  # A full snapshot of the quiet store: everything in it is a clone of the live file.
  "$STILLCTL" snapshot -q "$store" "$mnt/full" || t_fail "$fs: quiet snapshot failed"
  # Hashing the database's clone must not leave its pages cached (checked before anything here
  # reads it): they would double the store's cached database, and the next capture that
  # recycles the copy would wait for their eviction.
  local dbsize res
  dbsize=$(stat -c %s "$mnt/full/chroma.sqlite3")
  res=$(fincore --bytes --noheadings --output RES "$mnt/full/chroma.sqlite3")
  (( res * 10 < dbsize )) || t_fail "$fs: $res of the $dbsize bytes of the database clone stayed in the page cache"
  "$TORTURE" check --strict "$mnt/full" >/dev/null || t_fail "$fs: quiet snapshot is not consistent"
  local size full_cloned
  size=$(du -sb --exclude=.stillfs-manifest "$store" | cut -f1)
  full_cloned=$(awk '$1=="bytes_cloned"{print $2}' "$mnt/full/.stillfs-manifest")
  (( full_cloned * 10 >= size * 9 )) || t_fail "$fs: a full snapshot of $size bytes cloned only $full_cloned"
  (( cloned > 0 )) || t_fail "$fs: nothing was cloned under the writer"
  # filefrag marks extents that other files share. (Its whole output is read: with pipefail,
  # grep -q would make a long listing die of SIGPIPE and count as no match.)
  has_shared() { [[ "$(filefrag -v "$1")" == *shared* ]]; }
  local f shared=0 checked=0 unshared=""
  while IFS= read -r -d '' f; do
    [ "$(stat -c %s "$f")" -ge 65536 ] || continue
    checked=$((checked + 1))
    if has_shared "$f"; then shared=$((shared + 1)); else unshared+=" ${f#"$mnt/full/"}"; fi
  done < <(find "$mnt/full" -type f ! -name .stillfs-manifest -print0)
  (( checked > 0 && shared == checked )) || { filefrag -v "$mnt/full/${unshared# }" >&2 || true; t_fail "$fs: $shared of $checked files of the full snapshot have shared extents; not:$unshared"; }
  has_shared "$mnt/full/chroma.sqlite3" || t_fail "$fs: the database copy shares no extent"
  echo "# $fs: $N snapshots under the writer, consistent and verified; cloned $cloned B, copied $copied B, longest lock $(echo "$max_lock * 1000" | bc) ms; $shared files with shared extents"
  umount "$mnt" || t_fail "$fs: cannot unmount"
}
run xfs
run btrfs
