#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Mount over the store itself (MOUNTPOINT = STORE): the daemon reaches the store only through
# descriptors opened before mounting, captures go through the inherited store descriptor, an
# application writing "the store" path is writing through the mount, and copies of .snapshot
# are consistent. After unmounting, everything written is in the store.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${TORTURE:?}"
store=$T_WORK/store
"$TORTURE" init "$store" >/dev/null
t_mount "$store" "$store" -o snapshot_max_age=0,snapshot_linger=1
[ -f "$store/chroma.sqlite3" ] || t_fail "the store's files are not visible through the mount over it"
t_bg "$TORTURE" write --persist-interval 1000 "$store"
writer=${T_PIDS[-1]}
written() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
t_wait_for 30 written
unpinned() { [ "$(t_status "$store" pinned)" != yes ]; }
for i in 1 2 3; do
  t_wait_for 30 unpinned
  cp -a "$store/.snapshot" "$T_WORK/copy$i" || t_fail "cp -a of .snapshot failed"
  "$TORTURE" check --strict "$T_WORK/copy$i" >"$T_WORK/check.out" 2>&1 ||
    { cat "$T_WORK/check.out" >&2; t_fail "copy $i of the mounted-over store is not consistent"; }
  "$STILLCTL" verify "$T_WORK/copy$i" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "copy $i does not verify"; }
done
kill -TERM "$writer"; wait "$writer" || t_fail "the torture writer failed"
unset 'T_PIDS[-1]'
echo through-the-mount >"$store/marker"
gens=$(t_status "$store" generation)
t_unmount "$store"
[ "$(cat "$store/marker")" = through-the-mount ] || t_fail "a file written through the mount is not in the store"
[ ! -e "$store/.snapshot" ] || t_fail ".snapshot leaked into the store"
t_log_clean "$T_DAEMON_LOG"
echo "# daemon-mountover: ok ($gens generations)"
