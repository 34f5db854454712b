#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The daemon holds an open of a .snapshot file until the second the file is dated in, when
# its generation dated it ahead of the clock, so that no upload is dated before a changed
# file's mtime. Refreshes in quick succession with nothing changed in the store still change
# the manifest each time, and each dates it a second past the one before: the next capture
# waits for that second first, so nothing runs more than a second ahead, and an open of a
# file dated in the past is not held at all. (Before, eight idle refreshes dated the manifest
# 5 s ahead, and every open of every file of the generation was held that long.)
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
head -c 4096 /dev/urandom >"$store/f"
t_mount "$store" "$mnt"
ls "$mnt/.snapshot" >/dev/null || t_fail "ls .snapshot failed"
# The store's one file never changes: it keeps the first generation's date.
f_mtime=$(stat -c %Y "$mnt/.snapshot/f")
m_ahead() { # how far the manifest's mtime is ahead of now, in seconds
  awk -v m="$(stat -c %Y "$mnt/.snapshot/.stillfs-manifest")" -v n="$(date +%s.%N)" \
    'BEGIN{printf "%.3f", m - n}'
}
sum0=$(sha256sum <"$store/f")
for i in $(seq 1 8); do
  "$STILLCTL" refresh "$mnt" >/dev/null || t_fail "refresh $i failed"
  a=$(m_ahead)
  awk -v a="$a" 'BEGIN{exit !(a > 5.0)}' && break
done
[ "$(sha256sum <"$store/f")" = "$sum0" ] || t_fail "the store changed"
awk -v a="$a" 'BEGIN{exit !(a > 1.2)}' &&
  t_fail "after $i refreshes with nothing changed the manifest is dated $a s ahead of now (at most a second)"
m=$(stat -c %Y "$mnt/.snapshot/f")
[ "$m" = "$f_mtime" ] || t_fail ".snapshot/f was dated anew ($f_mtime -> $m) though it never changed"
t_log "after $i refreshes with nothing changed, the manifest is dated $a s ahead of now;" \
  "f (unchanged) has mtime $m, $(( $(date +%s) - m )) s ago"
# An uploader opens the unchanged file: how long is the open held?
held=$(python3 -c '
import os, sys, time
t = time.monotonic(); fd = os.open(sys.argv[1], os.O_RDONLY); h = time.monotonic() - t
os.read(fd, 4096); os.close(fd); print("%.2f" % h)
' "$mnt/.snapshot/f") || t_fail "opening .snapshot/f failed"
t_unmount "$mnt"
t_log "the open of .snapshot/f (mtime $m, unchanged) was held $held s"
awk -v h="$held" 'BEGIN{exit !(h > 1.5)}' &&
  t_fail "the open of an unchanged file whose mtime second had long come was held $held s, after $i refreshes with nothing changed (the generation's manifest dated $a s ahead): every upload of the generation waits that long"
t_log "OK: the open was not held past its bound"
