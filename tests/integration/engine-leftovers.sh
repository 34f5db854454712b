#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What a killed capture left beside DEST (.NAME.stillfs-tmp.PID, as big as the store) is
# removed by the next capture of NAME only where nobody else may rename things (reld-attack-dest).
# Elsewhere - a directory its group may write, as with umask 002 - it is kept, and the capture
# must say so: silently kept, leftovers would fill the disk unnoticed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${STILLCTL:?}"
S=$T_WORK/store
mkdir -p "$S" "$T_WORK/own" "$T_WORK/group"
echo a >"$S/a.txt"
chmod 0755 "$T_WORK/own"
chmod 0775 "$T_WORK/group"
true & dead=$!; wait "$dead"
for p in own group; do
  mkdir "$T_WORK/$p/.snap.stillfs-tmp.$dead"
  echo old >"$T_WORK/$p/.snap.stillfs-tmp.$dead/a.txt"
  "$STILLCTL" snapshot -q "$S" "$T_WORK/$p/snap" 2>"$T_WORK/$p.err" ||
    t_fail "snapshot into $p/ failed: $(cat "$T_WORK/$p.err")"
done
[ -e "$T_WORK/own/.snap.stillfs-tmp.$dead" ] && t_fail "the leftover in a directory only we may write was not removed"
[ -e "$T_WORK/group/.snap.stillfs-tmp.$dead" ] || t_fail "the leftover in a group-writable directory was removed"
grep -q "\.snap\.stillfs-tmp\.$dead.*remove it by hand" "$T_WORK/group.err" ||
  t_fail "the leftover kept in a group-writable directory was not reported: $(cat "$T_WORK/group.err")"
echo ok
