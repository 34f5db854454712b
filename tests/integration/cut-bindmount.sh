#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# One directory of the store under two names: view/ is a bind mount of real/. A directory has
# one inotify watch, which reports under whichever name was watched last, so a file made in it
# raised an event for one name only, and the snapshot held it under that name and not the
# other. Here new.txt is made in real/, then count.txt is written: a snapshot with count.txt
# 2 must hold new.txt under both names.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "SKIP: bind mounts need root" >&2; exit 77; }
S=$T_WORK/store
mkdir -p "$S/real" "$S/view"
echo 1 >"$S/count.txt"
echo a >"$S/real/a.txt"
mount --bind "$S/real" "$S/view" || { echo "SKIP: cannot bind-mount" >&2; exit 77; }
trap 'rc=$?; umount "$S/view" 2>/dev/null; (exit "$rc"); t_cleanup' EXIT

# A file changing every 50 ms keeps the capture from its quiet window until stop appears.
churn() { while [ ! -e "$T_WORK/stop" ]; do date +%s%N >"$S/churn.txt"; sleep 0.05; done; }
t_bg churn
capture() { local rc=0; "$STILLCTL" snapshot -q "$S" "$T_WORK/snap" 2>"$T_WORK/snap.err" || rc=$?; echo "$rc" >"$T_WORK/snap.rc"; }
t_bg capture
staged() { local f; for f in "$T_WORK"/.snap.stillfs-tmp.*/count.txt; do cmp -s "$f" "$S/count.txt" && return 0; done; return 1; }
t_wait_for 30 staged

echo 2 >"$S/real/new.txt"
echo 2 >"$S/count.txt"
touch "$T_WORK/stop"
t_wait_for 60 test -s "$T_WORK/snap.rc"
[ "$(cat "$T_WORK/snap.rc")" = 0 ] || t_fail "stillctl snapshot exited $(cat "$T_WORK/snap.rc"): $(cat "$T_WORK/snap.err")"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "the snapshot fails stillctl verify"
count=$(cat "$T_WORK/snap/count.txt")
if [ "$count" = 2 ]; then
  for d in real view; do
    [ -e "$T_WORK/snap/$d/new.txt" ] || t_fail "published but torn: count.txt is 2 and $d/new.txt, made before it, is missing"
  done
fi
echo "published: count.txt $count, new.txt under both names"
