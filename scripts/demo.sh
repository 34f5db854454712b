#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The main job on a built-in demo: a live ChromaDB-like store (a rollback-journal database,
# a WAL database, an index segment rewritten in place) with its writer running, mounted with
# stillfs; its .snapshot/ is copied with rsync, cp -a and tar, and every copy is checked for
# a consistent cut and verified against its manifest. Then the same without FUSE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${STILLFS_BUILD:-build}
[ -d "$build" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null
stillfs=$PWD/$build/fs/daemon/stillfs stillctl=$PWD/$build/fs/ctl/stillctl
torture=$PWD/$build/tests/torture/torture

demo=$(mktemp -d /tmp/stillfs-demo.XXXXXX)
writer= daemon=
cleanup() {
  [ -n "$writer" ] && kill "$writer" 2>/dev/null && wait "$writer" 2>/dev/null
  mountpoint -q "$demo/mnt" 2>/dev/null && fusermount3 -u -z "$demo/mnt"
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$demo"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
wait_for() { local n=0; until "$@"; do n=$((n + 1)); [ $n -lt 600 ] || { echo "timed out: $*" >&2; exit 1; }; sleep 0.05; done; }
check() { # check DIR: consistent cut across all files, and the manifest matches
  "$torture" check --strict "$1" | sed 's/^/   checker: /'
  "$stillctl" verify "$1" | sed 's/^/   /'
}

step "a live store with a writer running (torture write: ChromaDB's pattern)"
"$torture" init "$demo/store" >/dev/null
"$torture" write --persist-interval 1000 "$demo/store" >"$demo/writer.log" 2>&1 & writer=$!
persisted() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$demo/store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id' 2>/dev/null)" ]; }
wait_for persisted
ls -l "$demo/store" | sed 's/^/   /'

step "mount it: stillfs $demo/store $demo/mnt"
mkdir "$demo/mnt"
"$stillfs" "$demo/store" "$demo/mnt" -f -o cache="$demo/cache",snapshot_linger=1 2>"$demo/stillfs.log" & daemon=$!
wait_for mountpoint -q "$demo/mnt"

round=0
for tool in "rsync -a" "cp -a" "tar"; do
  round=$((round + 1))
  [ $round -gt 1 ] && "$stillctl" refresh "$demo/mnt" >/dev/null
  step "copy $demo/mnt/.snapshot with $tool, while the writer keeps writing"
  out=$demo/copy$round
  start=$(date +%s.%N)
  case $tool in
    rsync*) rsync -a "$demo/mnt/.snapshot/" "$out/" ;;
    cp*) cp -a "$demo/mnt/.snapshot" "$out" ;;
    # (changed files carry the cut time as mtime, which may be a moment ahead of the clock)
    tar) mkdir "$out"; tar -C "$demo/mnt/.snapshot" -cf - . | tar -C "$out" --warning=no-timestamp -xf - ;;
  esac
  printf '   copied in %.2f s\n' "$(echo "$(date +%s.%N) - $start" | bc)"
  check "$out"
  "$stillctl" status "$demo/mnt" | sed 's/^/   status: /'
done

step "the same engine without FUSE: stillctl snapshot (as on AWS Lambda)"
"$stillctl" snapshot "$demo/store" "$demo/snap1"
"$stillctl" snapshot --previous "$demo/snap1" "$demo/store" "$demo/snap2"
check "$demo/snap2"

kill "$writer"; wait "$writer" || true; writer=
step "writer: $(tail -1 "$demo/writer.log")"
fusermount3 -u "$demo/mnt"; wait "$daemon" || true; daemon=
if grep -qiE 'error|fail' "$demo/stillfs.log"; then echo "stillfs logged errors:"; cat "$demo/stillfs.log"; exit 1; fi
step "demo complete: every copy was a consistent cut and matched its manifest"
