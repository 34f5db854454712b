#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The product: rsync, cp -a and tar of MOUNTPOINT/.snapshot while the torture writer runs at
# full speed, first writing STORE directly, then writing through the mount. Every copy must
# pass the cross-file checker (strict) and stillctl verify, and the copies must come from
# several generations (the writer keeps changing the store between them).
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${TORTURE:?}"
ROUNDS=${DAEMON_COPY_ROUNDS:-3}
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$mnt"
"$TORTURE" init "$store" >/dev/null
t_mount "$store" "$mnt" -o snapshot_max_age=0,snapshot_linger=1

judge() {  # judge DIR WHAT
  "$TORTURE" check --strict "$1" >"$T_WORK/check.out" 2>&1 ||
    { cat "$T_WORK/check.out" >&2; t_fail "$2: the copy is not one consistent instant"; }
  "$STILLCTL" verify "$1" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "$2: the copy does not verify"; }
  rm -rf "$1"
}
# Wait for the previous copy's generation to stop being pinned, so the next copy gets a
# fresh one (max_age is 0): the status file says when.
unpinned() { [ "$(t_status "$mnt" pinned)" != yes ]; }
copies() {  # copies LABEL WRITER_TARGET
  local label=$1 target=$2 i gens=() dst
  t_bg "$TORTURE" write --persist-interval 1000 "$target"
  local writer=${T_PIDS[-1]}
  written() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
  t_wait_for 30 written
  for i in $(seq 1 "$ROUNDS"); do
    dst=$T_WORK/copy
    t_wait_for 30 unpinned
    rsync -a "$mnt/.snapshot/" "$dst/" || t_fail "$label: rsync failed"
    gens+=("$(t_status "$mnt" generation)")
    judge "$dst" "$label rsync $i"
    t_wait_for 30 unpinned
    cp -a "$mnt/.snapshot" "$dst" || t_fail "$label: cp -a failed"
    gens+=("$(t_status "$mnt" generation)")
    judge "$dst" "$label cp -a $i"
    t_wait_for 30 unpinned
    mkdir "$dst"
    # The snapshot's mtimes may be ahead of the clock on purpose (for uploaders); not a problem.
    tar -C "$mnt/.snapshot" -cf - . | tar -C "$dst" -xf - 2> >(grep -v 'in the future' >&2) ||
      t_fail "$label: tar failed"
    gens+=("$(t_status "$mnt" generation)")
    judge "$dst" "$label tar $i"
  done
  kill -TERM "$writer"
  wait "$writer" || t_fail "$label: the torture writer failed"
  unset 'T_PIDS[-1]'
  local distinct
  distinct=$(printf '%s\n' "${gens[@]}" | sort -u | wc -l)
  [ "$distinct" -ge 3 ] || t_fail "$label: copies came from only $distinct generation(s): ${gens[*]}"
  t_log "$label: $((ROUNDS * 3)) copies from generations ${gens[*]}: all consistent and verified"
}
copies "writer on STORE" "$store"
copies "writer through the mount" "$mnt"
t_log "last capture: $(t_status "$mnt" capture_s) s, copied $(t_status "$mnt" bytes_copied) B, shared $(t_status "$mnt" bytes_shared) B, longest lock $(t_status "$mnt" lock_max_s) s"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# daemon-copy: ok"
