#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Guarantee A against a long write: the group x.bin, y.bin is rewritten in place, y.bin 300 ms
# after x.bin's write returned (shorter than the 400 ms quiet window). x.bin's write(2) takes
# 1.5 s because its source buffer faults slowly (slowwrite.c, userfaultfd; a buffer mapped
# from a slow or network file does the same). The kernel stamps x.bin's ctime when the write
# begins, so a capture started right after the write returned reads the store's newest ctime
# as 1.5 s old, takes the store to have been quiet for 1.3 s, and copies x.bin new and y.bin
# old before y.bin is written: the cut falls inside the group.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store
rounds=${ATK_ROUNDS:-5}
cuts=0
for r in $(seq 1 "$rounds"); do
  old=$((r % 2)) new=$(((r + 1) % 2))
  rm -rf "$store" "$T_WORK/snap"
  mkdir -p "$store/d"
  for i in $(seq 1 20); do echo "$i" >"$store/d/f$i"; done
  head -c 4096 /dev/zero | tr '\0' "$old" >"$store/x.bin"
  cp "$store/x.bin" "$store/y.bin"
  "$SLOWWRITE" "$store/x.bin" "$store/y.bin" 1500 300 "$new" -- \
    "$STILLCTL" snapshot -q --uploads-before 1 "$store" "$T_WORK/snap"
  rc=$?
  [ "$rc" = 77 ] && { t_log "SKIP: no userfaultfd here"; exit 77; }
  [ "$rc" = 0 ] || t_fail "round $r: snapshot failed ($rc)"
  x=$(head -c 1 "$T_WORK/snap/x.bin") y=$(head -c 1 "$T_WORK/snap/y.bin")
  [ "$(head -c 1 "$store/y.bin")" = "$new" ] || t_fail "round $r: the writer did not finish"
  t_log "round $r: snapshot holds x.bin=$x y.bin=$y (old $old, new $new)"
  [ "$x" = "$y" ] || cuts=$((cuts + 1))
done
[ "$cuts" = 0 ] || t_fail "$cuts of $rounds snapshots cut the group inside (x.bin new, y.bin old): a write whose ctime predates its data by 1.5 s made the store look quiet"
t_log "OK: $rounds snapshots, none cut the group"
