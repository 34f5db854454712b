#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cut-mmap's group of mapped files, written through a stillfs mount with -o no_passthrough and
# captured by the daemon (`stillctl refresh`) while the writer stamps them: every store waits in
# the mount's page cache until the kernel writes it back. The snapshot must be one instant, and
# hold at least the version the mount showed before the refresh began (f00 is stamped first:
# f11 then held that version or the one before). Three rounds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${STILLFS:?STILLFS must point to the stillfs binary}"
N=12
stamps() { python3 -c 'import struct, sys
print(*[struct.unpack("<Q", open("%s/f%02d.bin" % (sys.argv[1], i), "rb").read(8))[0] for i in range(int(sys.argv[2]))])' "$@"; }

store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
t_mount "$store" "$mnt" -o snapshot_max_age=3600,snapshot_linger=0,no_passthrough
for round in 1 2 3; do
  R=$mnt/r$round
  mkdir "$R"
  t_bg python3 "$(dirname "${BASH_SOURCE[0]}")/cut-mmap-writer.py" "$R" "$N" \
    "$T_WORK/ready$round" "$T_WORK/stop$round" 50 >"$T_WORK/writer$round.out"
  writer=$!
  t_wait_for 30 test -e "$T_WORK/ready$round"
  read -r before _ < <(stamps "$R" 1)
  "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 ||
    t_fail "round $round: the capture failed: $(cat "$T_WORK/refresh.out")"
  got=$(stamps "$mnt/.snapshot/r$round" "$N")
  touch "$T_WORK/stop$round"
  wait "$writer" || true
  "$STILLCTL" verify "$mnt/.snapshot" >/dev/null || t_fail "round $round: the snapshot fails stillctl verify"
  python3 - "$before" $got <<'PY' || t_fail "round $round: the mount showed version $before before the refresh; the snapshot holds [$got]"
import sys
before, vs = int(sys.argv[1]), [int(v) for v in sys.argv[2:]]
one = all(a >= b for a, b in zip(vs, vs[1:])) and vs[0] - vs[-1] <= 1
sys.exit(0 if one and vs[-1] >= before - 1 else 1)
PY
  echo "round $round: published [$got], the mount showed $before before; the writer wrote $(cat "$T_WORK/writer$round.out")"
done
t_unmount "$mnt"
