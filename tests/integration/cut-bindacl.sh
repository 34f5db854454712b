#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A directory inotify may not cover fully (here: under two names, view/ a bind mount of
# real/) is swept by its stat; when its stat moved but its entries are the same (a file made
# and removed again), the capture takes that stat as the directory's. The snapshot keeps no
# ACL, so that stat's mode must be narrowed by the directory's ACL like every other: a
# directory that denies nobody through its ACL must not become open to nobody in the snapshot.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "SKIP: bind mounts need root" >&2; exit 77; }
command -v setfacl >/dev/null || { echo "SKIP: setfacl is needed" >&2; exit 77; }
S=$T_WORK/store
mkdir -p "$S/real" "$S/view"
echo a >"$S/real/a.txt"
chmod 0755 "$S/real"
setfacl -m u:nobody:--- "$S/real" 2>/dev/null || { echo "SKIP: no ACLs here" >&2; exit 77; }
mount --bind "$S/real" "$S/view" || { echo "SKIP: cannot bind-mount" >&2; exit 77; }
trap 'rc=$?; umount "$S/view" 2>/dev/null; (exit "$rc"); t_cleanup' EXIT

# A name made and removed again in real/, every 50 ms, until 40 rounds after the capture has
# staged a first copy (go): real/'s mtime moves, its entries stay a.txt alone, and sweeps
# in the capture's quiet wait find it so.
churn() {
  local n=0
  while [ "$n" -lt 40 ]; do
    : >"$S/real/tmp"; rm -f "$S/real/tmp"; sleep 0.05
    [ -e "$T_WORK/go" ] && n=$((n + 1))
  done
}
t_bg churn
capture() { local rc=0; "$STILLCTL" snapshot -q "$S" "$T_WORK/snap" 2>"$T_WORK/snap.err" || rc=$?; echo "$rc" >"$T_WORK/snap.rc"; }
t_bg capture
staged() { local f; for f in "$T_WORK"/.snap.stillfs-tmp.*/real/a.txt; do [ -e "$f" ] && return 0; done; return 1; }
t_wait_for 30 staged
touch "$T_WORK/go"
t_wait_for 60 test -s "$T_WORK/snap.rc"
[ "$(cat "$T_WORK/snap.rc")" = 0 ] || t_fail "stillctl snapshot exited $(cat "$T_WORK/snap.rc"): $(cat "$T_WORK/snap.err")"
for d in real view; do
  mode=$(stat -c %a "$T_WORK/snap/$d")
  [ "$mode" = 700 ] || t_fail "snapshot's $d/ has mode $mode: its ACL (user:nobody:---) was not applied (want 700)"
done
echo "both names of the directory narrowed by its ACL"
