#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A reader that goes on reading files of an older generation (a process whose working directory,
# or a directory handle, is below .snapshot; a read-only application serving from it) after a
# newer one was cut. A file the newer generation shares with the older one (unchanged: the
# same inode) holds the same bytes in both, so reading it late leaves no upload stale: it must
# not count as an overtaking read. Otherwise every opening of .snapshot by an uploader
# captured a new generation (snapshot_max_age and snapshot_linger ignored), each dating anew
# every file changed since the older generation, which the uploader then sent again, forever.
# A late read of a file that did change must still count (daemon-latereads covers the rest).
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/sub" "$mnt"
echo x >"$store/sub/x"
echo y >"$store/sub/y"
t_mount "$store" "$mnt" -o snapshot_max_age=3600,snapshot_linger=3600
gen() { "$STILLCTL" status "$mnt" | sed -n 's/^generation: //p'; }

ls "$mnt/.snapshot/sub" >/dev/null
g1=$(gen)
exec 4<"$mnt/.snapshot/sub"                 # this shell stays in generation g1's sub/
echo y2 >"$store/sub/y"
"$STILLCTL" refresh "$mnt" >/dev/null || t_fail "stillctl refresh failed"
g2=$(gen)
[ "$g2" -gt "$g1" ] || t_fail "refresh made no new generation ($g1 -> $g2)"

for i in 1 2 3; do
  [ "$(cat "/proc/$$/fd/4/x")" = x ] || t_fail "cannot read x of generation $g1"
  ls "$mnt/.snapshot/" >/dev/null          # an uploader's next run
done
g=$(gen)
[ "$g" = "$g2" ] ||
  t_fail "reading an unchanged file of an older generation made the daemon capture anew ($g2 -> $g): $(grep -c 'capturing anew' "$T_DAEMON_LOG") times"

# A late read of a changed file still makes the next opener get a new generation.
[ "$(cat "/proc/$$/fd/4/y")" = y ] || t_fail "cannot read y of generation $g1"
ls "$mnt/.snapshot/" >/dev/null
g=$(gen)
[ "$g" -gt "$g2" ] || t_fail "a late read of a changed file no longer makes the next opener capture anew"
exec 4<&-
t_unmount "$mnt"
echo ok
