#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A store through a shared mapping made through the mount, of a file that has no passthrough
# backing file (an executable; with -o no_passthrough, every file): the page is in the mount's
# page cache, dirty, and reaches the store only when the kernel writes it back to the daemon
# (up to 30 s later, or at a close). The application then writes count.txt through the mount,
# which the daemon writes to the store at once. A snapshot taken after both, with count.txt 2,
# must hold the mapped store too. Two rounds: an executable with passthrough, then a plain
# file with -o no_passthrough.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${STILLFS:?STILLFS must point to the stillfs binary}"

cat >"$T_WORK/app.py" <<'PY'
import mmap, os, struct, sys, time
mnt = sys.argv[1]
fd = os.open(os.path.join(mnt, "map.bin"), os.O_RDWR)
m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
os.close(fd)  # (a close writes the dirty pages back: the store below comes after it)
m[0:8] = struct.pack("<Q", 2)
with open(os.path.join(mnt, "count.txt"), "w") as f:
    f.write("2\n")
print("stored", flush=True)
time.sleep(3600)
PY

round() {
  local name=$1 mode=$2; shift 2
  local store=$T_WORK/$name/store mnt=$T_WORK/$name/mnt out=$T_WORK/$name/app.out
  mkdir -p "$store" "$mnt"
  python3 -c 'import struct,sys; open(sys.argv[1],"wb").write(struct.pack("<Q",1)+bytes(4088))' "$store/map.bin"
  chmod "$mode" "$store/map.bin"
  echo 1 >"$store/count.txt"
  t_mount "$store" "$mnt" -o "snapshot_max_age=3600,snapshot_linger=0$*"
  t_log "$name: passthrough: $(t_status "$mnt" passthrough)"
  python3 "$T_WORK/app.py" "$mnt" >"$out" 2>&1 &
  local app=$!
  T_PIDS+=("$app")
  stored() { grep -q stored "$out"; }
  t_wait_for 20 stored
  "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || t_fail "$name: the capture failed: $(cat "$T_WORK/refresh.out")"
  local snap=$mnt/.snapshot count stamp
  count=$(cat "$snap/count.txt")
  stamp=$(python3 -c 'import struct,sys; print(struct.unpack("<Q",open(sys.argv[1],"rb").read(8))[0])' "$snap/map.bin")
  "$STILLCTL" verify "$snap" >/dev/null || t_fail "$name: the snapshot fails stillctl verify"
  kill "$app"; wait "$app" 2>/dev/null || true
  t_unmount "$mnt"
  [ "$count" != 2 ] || [ "$stamp" = 2 ] ||
    t_fail "$name: published but torn: count.txt is 2 (written after the mapped store) and map.bin still holds $stamp"
  echo "$name: published: count.txt $count, map.bin $stamp"
}
round exec 0755
round nopt 0644 ,no_passthrough
