#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A file system mounted on a directory of the store while a capture runs: the name now leads to
# another directory, which nobody watches, and the mount raises no event in the store. Here a
# tmpfs is mounted on sub/, new.txt is made in it, then count.txt is written: a snapshot with
# count.txt 2 must hold sub/new.txt.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "SKIP: mounts need root" >&2; exit 77; }
S=$T_WORK/store
mkdir -p "$S/sub"
echo 1 >"$S/count.txt"
trap 'rc=$?; umount "$S/sub" 2>/dev/null; (exit "$rc"); t_cleanup' EXIT

# A file changing every 50 ms keeps the capture from its quiet window until stop appears.
churn() { while [ ! -e "$T_WORK/stop" ]; do date +%s%N >"$S/churn.txt"; sleep 0.05; done; }
t_bg churn
capture() { local rc=0; "$STILLCTL" snapshot -q "$S" "$T_WORK/snap" 2>"$T_WORK/snap.err" || rc=$?; echo "$rc" >"$T_WORK/snap.rc"; }
t_bg capture
staged() { local f; for f in "$T_WORK"/.snap.stillfs-tmp.*/count.txt; do cmp -s "$f" "$S/count.txt" && return 0; done; return 1; }
t_wait_for 30 staged

mount -t tmpfs -o size=1m stillfs-test "$S/sub" || { echo "SKIP: cannot mount a tmpfs" >&2; exit 77; }
echo 2 >"$S/sub/new.txt"
echo 2 >"$S/count.txt"
touch "$T_WORK/stop"
t_wait_for 60 test -s "$T_WORK/snap.rc"
[ "$(cat "$T_WORK/snap.rc")" = 0 ] || t_fail "stillctl snapshot exited $(cat "$T_WORK/snap.rc"): $(cat "$T_WORK/snap.err")"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "the snapshot fails stillctl verify"
count=$(cat "$T_WORK/snap/count.txt")
[ "$count" != 2 ] || [ -e "$T_WORK/snap/sub/new.txt" ] ||
  t_fail "published but torn: count.txt is 2 and sub/new.txt, made before it, is missing"
echo "published: count.txt $count, sub/new.txt $(cat "$T_WORK/snap/sub/new.txt" 2>/dev/null || echo absent)"
