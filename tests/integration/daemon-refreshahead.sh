#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Guarantee B against quick refreshes: a file changed before each of several `stillctl refresh`
# runs, one right after another (each takes about the 400 ms quiet window). Each generation
# dates the changed file one second after the previous generation's date of it; a refresh that
# comes before that date's second first waits for it, so the dates never run more than a
# second ahead of the clock (they once ran ahead by most of a second per refresh), and an open
# of the file after the last refresh is held until its mtime's second: an upload made then is
# not dated before the mtime (else the next `aws s3 sync` sends the file again).
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo 0 >"$store/f"
t_mount "$store" "$mnt"
ls "$mnt/.snapshot" >/dev/null || t_fail "ls .snapshot failed"
ahead() { # how far the file's mtime in .snapshot is ahead of now, in seconds
  awk -v m="$(stat -c %Y "$mnt/.snapshot/f")" -v n="$(date +%s.%N)" 'BEGIN{printf "%.3f", m - n}'
}
for i in $(seq 1 6); do
  echo "$i" >"$store/f"
  "$STILLCTL" refresh "$mnt" >/dev/null || t_fail "refresh $i failed"
  a=$(ahead)
  t_log "refresh $i: .snapshot/f is dated $a s ahead of now"
  awk -v a="$a" 'BEGIN{exit !(a > 1.2)}' && t_fail "after $i quick refreshes .snapshot/f is dated $a s ahead (at most a second)"
done
# An uploader: stat, open (held by the daemon), read; the time the open returned.
read -r m t data < <(python3 -c '
import os, sys, time
p = sys.argv[1]
m = os.stat(p).st_mtime
fd = os.open(p, os.O_RDONLY); t = time.time(); d = os.read(fd, 64).decode().strip(); os.close(fd)
print(int(m), "%.6f" % t, d)
' "$mnt/.snapshot/f") || t_fail "reading .snapshot/f failed"
t_unmount "$mnt"
t_log "after $i refreshes: .snapshot/f holds $data, mtime second $m, its open returned at $t"
[ "$data" = "$i" ] || t_fail ".snapshot/f holds $data, not $i after refresh $i"
awk -v t="$t" -v m="$m" 'BEGIN{exit !(t >= m)}' ||
  t_fail ".snapshot/f (mtime second $m) was opened at $t, $(awk -v t="$t" -v m="$m" 'BEGIN{printf "%.1f", m - t}') s before its second, after $i quick refreshes: an upload is dated before the mtime and the next sync sends it again"
t_log "OK: the open returned in or after its file's second"
