#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cut-mmap on an overlayfs store (a container's root file system): the writer maps files of
# the merged directory, so its pages are those of the upper layer's file, and the engine's
# write-back (sync_file_range on its file of the merged directory) reaches no page of them:
# they stay dirty and writable, later stores move no time, and the sweep sees nothing. The
# same writer and checker as cut-mmap; three rounds, each published snapshot must be one
# instant.
[ "$(id -u)" = 0 ] || { echo "FAIL: needs root (an overlay mount)" >&2; exit 1; }
map_store() {
  S=$1/store
  mkdir -p "$1/lower" "$1/upper" "$1/ovlwork" "$S"
  mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/ovlwork" "$S" ||
    t_fail "cannot mount an overlay"
  T_MOUNTS+=("$S")
}
map_store_done() { umount "$1/store"; }
source "$(dirname "${BASH_SOURCE[0]}")/cut-mmap.sh"
