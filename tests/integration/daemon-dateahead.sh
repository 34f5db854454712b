#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The first generation after a mount on an empty cache must date its files in a later whole
# second than the daemon's start (an earlier daemon's snapshots may have been uploaded in that
# second), and no upload of them may be dated before their mtimes (aws s3 sync would send them
# again). The daemon does not wait for that second before serving .snapshot: it dates the files
# ahead and holds each open of one until its second has come. So a listing right after the
# mount is served at once, and every open returns in or after its file's mtime's second.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store
mkdir -p "$store/seg"
for i in 0 1 2; do head -c 50000 /dev/urandom >"$store/seg/f$i"; done
sqlite3 "$store/db.sqlite3" 'create table t(x); insert into t values (1);'
# early: the fraction of this second is under 0.2 (the mount then starts early in a second)
early() { local n; n=$(date +%N); [ "${n:0:1}" -lt 2 ]; }
served_early=0
for round in 1 2 3; do
  mnt=$T_WORK/mnt$round
  mkdir -p "$mnt"
  t_wait_for 5 early
  t_mount "$store" "$mnt"
  start=$(date +%s)
  ls -R "$mnt/.snapshot" >/dev/null || t_fail "round $round: ls .snapshot failed"
  listed=$(date +%s.%N)
  # Every file: its mtime, and the time its open returned (in one process, as an uploader).
  out=$(cd "$mnt/.snapshot" && python3 -c '
import os, sys, time
for root, dirs, files in os.walk("."):
    for f in files:
        p = os.path.join(root, f)
        m = os.stat(p).st_mtime
        fd = os.open(p, os.O_RDONLY); t = time.time(); os.read(fd, 4096); os.close(fd)
        print(p, int(m), "%.6f" % t)
') || t_fail "round $round: reading .snapshot failed"
  newest=0
  while read -r p m t; do
    ((m > start)) || t_fail "round $round: $p is dated $m, not after the daemon started in second $start"
    awk -v t="$t" -v m="$m" 'BEGIN{exit !(t >= m)}' ||
      t_fail "round $round: $p (mtime $m) was opened at $t, before its second: an upload would be dated before it"
    ((m > newest)) && newest=$m
  done <<<"$out"
  [ "$(wc -l <<<"$out")" -ge 5 ] || t_fail "round $round: only $(wc -l <<<"$out") files in .snapshot"
  t_log "round $round: started in $start, listed at $listed, files dated up to $newest"
  awk -v l="$listed" -v m="$newest" 'BEGIN{exit !(l < m)}' && served_early=$((served_early + 1))
  t_unmount "$mnt"
done
# Each mount began in the first fifth of a second: a listing held until the files' second would
# end after it every time.
((served_early >= 1)) || t_fail "in none of 3 mounts was .snapshot listed before the second its files are dated in: the listing waited for it"
echo "ok: listed early in $served_early of 3"
