#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kill -9 of the daemon with -o auto_unmount leaves no mount behind (libfuse's fusermount3
# helper notices and unmounts), and no capture helper outlives the daemon.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
for i in $(seq 200); do head -c 20000 /dev/urandom >"$store/f$i"; done
t_mount "$store" "$mnt" -o auto_unmount,snapshot_max_age=0,snapshot_linger=0
[ "$(ls "$mnt/.snapshot" | wc -l)" -ge 200 ] || t_fail "snapshot incomplete"
# Kill it in the middle of serving: a reader keeps asking for new generations meanwhile.
( while :; do cat "$mnt/.snapshot/f1" >/dev/null 2>&1 || break; done ) &
reader=$!
helpers=$(pgrep -P "$T_DAEMON_PID" -f -- '--capture-helper' || true)
kill -9 "$T_DAEMON_PID"
{ wait "$T_DAEMON_PID"; } 2>/dev/null || true
unmounted() { ! t_is_stillfs "$mnt"; }
t_wait_for 10 unmounted
wait "$reader" 2>/dev/null || true
no_helper() { for p in $helpers; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
t_wait_for 15 no_helper
ls "$mnt" >/dev/null || t_fail "the mountpoint is unusable after the daemon died"
echo "# daemon-kill: ok (capture helpers running at the kill: ${helpers:-none})"
