#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cut-mmap on a store that is a FUSE mount (here a stillfs mount with passthrough), captured
# through it: the writer's mappings of the mount's files are mappings of the files below it,
# and the engine's write-back (sync_file_range on its file of the mount) reaches no page of
# them: they stay dirty and writable, later stores move no time, and the sweep sees nothing.
# The same writer and checker as cut-mmap; three rounds, each published snapshot must be one
# instant.
: "${STILLFS:?STILLFS must point to the stillfs binary}"
# The stillfs mount under the stores, made at the first round.
map_store() {
  if [ ! -d "$T_WORK/mnt" ]; then
    mkdir -p "$T_WORK/under" "$T_WORK/mnt"
    t_mount "$T_WORK/under" "$T_WORK/mnt" -o snapshot_max_age=3600,snapshot_linger=0
    t_log "passthrough: $(t_status "$T_WORK/mnt" passthrough)"
  fi
  S=$T_WORK/mnt/${1##*/}
  mkdir -p "$S"
}
map_store_done() { :; }
source "$(dirname "${BASH_SOURCE[0]}")/cut-mmap.sh"
