#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A group of files written through shared mappings (MAP_SHARED stores, as LMDB's WRITEMAP, a
# numpy memmap or an mmap'ed vector index do): no system call, no inotify event, and the kernel
# moves a file's mtime and ctime only when a clean page is first written, not at every store
# to a page already dirty. The writer stamps the same version at the head of every file, in
# order, again and again: at any instant the files hold v down to some file and v-1 after it,
# so a snapshot whose stamps differ by more than one, or rise from one file to the next, was
# not taken at one instant. The writer stops after 2 s, so that a capture can find the files
# still. Three rounds; each published snapshot must be one instant.
# cut-overlaymap and cut-fusemap run this same test on other stores: they define map_store
# (sets S, round $1's store) and map_store_done, then source this file.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=12
declare -F map_store >/dev/null || map_store() { S=$1/store; mkdir -p "$S"; }
declare -F map_store_done >/dev/null || map_store_done() { :; }

cat >"$T_WORK/check.py" <<'PY'
import struct, sys
d, n = sys.argv[1], int(sys.argv[2])
vs = [struct.unpack("<Q", open("%s/f%02d.bin" % (d, i), "rb").read(8))[0] for i in range(n)]
one = all(a >= b for a, b in zip(vs, vs[1:])) and vs[0] - vs[-1] <= 1
print("one instant" if one else "torn", vs)
PY

for round in 1 2 3; do
  R=$T_WORK/r$round
  mkdir -p "$R"
  map_store "$R"
  echo plain >"$S/plain.txt"
  t_bg python3 "$(dirname "${BASH_SOURCE[0]}")/cut-mmap-writer.py" "$S" "$N" "$R/ready" "$R/stop" 1 >"$R/writer.out"
  writer=$!
  t_wait_for 30 test -e "$R/ready"
  rc=0
  "$STILLCTL" snapshot -q "$S" "$R/snap" 2>"$R/snap.err" || rc=$?
  touch "$R/stop"
  wait "$writer" || true
  case $rc in
    0)
      "$STILLCTL" verify "$R/snap" >/dev/null || t_fail "round $round: the snapshot fails stillctl verify"
      verdict=$(python3 "$T_WORK/check.py" "$R/snap" "$N")
      [[ $verdict == one* ]] || t_fail "round $round: published, but its files are $verdict"
      echo "round $round: published, $verdict; the writer wrote $(cat "$R/writer.out") versions"
      ;;
    3) [ ! -e "$R/snap" ] || t_fail "round $round: exit 3 but the snapshot exists"
       t_fail "round $round: no cut: $(cat "$R/snap.err")" ;;
    *) t_fail "round $round: stillctl snapshot exited $rc: $(cat "$R/snap.err")" ;;
  esac
  map_store_done "$R"
  rm -rf "$R"
done
