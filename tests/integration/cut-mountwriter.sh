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
cat >"$T_WORK/writer.py" <<'PY'
import mmap, os, struct, sys, time
store, n, ready, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
maps = []
for i in range(n):
    fd = os.open(os.path.join(store, "f%02d.bin" % i), os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 1 << 20)
    maps.append(mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
    os.close(fd)
v, end = 0, time.monotonic() + 2
while time.monotonic() < end:
    v += 1
    for m in maps:
        m[0:8] = struct.pack("<Q", v)
    if v == 50:
        open(ready, "w").close()
    time.sleep(0.001)
print(v, flush=True)
while not os.path.exists(stop):
    time.sleep(0.05)
PY
stamps() { python3 -c 'import struct, sys
print(*[struct.unpack("<Q", open("%s/f%02d.bin" % (sys.argv[1], i), "rb").read(8))[0] for i in range(int(sys.argv[2]))])' "$@"; }

store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
t_mount "$store" "$mnt" -o snapshot_max_age=3600,snapshot_linger=0,no_passthrough
for round in 1 2 3; do
  R=$mnt/r$round
  mkdir "$R"
  t_bg python3 "$T_WORK/writer.py" "$R" "$N" "$T_WORK/ready$round" "$T_WORK/stop$round" \
    >"$T_WORK/writer$round.out"
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
