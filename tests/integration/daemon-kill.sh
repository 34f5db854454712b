#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kill -9 of the daemon with -o auto_unmount leaves no mount behind (libfuse's fusermount3
# helper notices and unmounts), and a capture helper caught mid-capture at the kill gives up
# instead of outliving the daemon.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
for i in $(seq 200); do head -c 20000 /dev/urandom >"$store/f$i"; done
# settle_timeout is long, and a writer keeps the store busy once the first generation is up:
# a capture then lasts until someone stops it, so a helper that missed the daemon's death
# would still be there when we look.
t_mount "$store" "$mnt" -o auto_unmount,snapshot_max_age=0,snapshot_linger=0,settle_timeout=300
[ "$(ls "$mnt/.snapshot" | wc -l)" -ge 200 ] || t_fail "snapshot incomplete"
t_bg bash -c 'while :; do echo x >>"$1/busy"; sleep 0.05; done' writer "$store"
# Kill it in the middle of serving: a reader keeps asking for new generations meanwhile.
( while :; do cat "$mnt/.snapshot/f1" >/dev/null 2>&1 || break; done ) &
reader=$!
# The check that no helper outlives the daemon proves something only if one is running when the
# daemon dies: catch one mid-capture and stop it (a stopped process stays alive whatever it is
# doing), so it cannot finish on its own between our look and the kill.
helper=
state() { awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null; }
catch_helper() {
  [ -n "$helper" ] || helper=$(pgrep -P "$T_DAEMON_PID" -f -- '--capture-helper' | head -n1 || true)
  [ -n "$helper" ] || return 1
  kill -STOP "$helper" 2>/dev/null || true
  case $(state "$helper") in
    T) return 0 ;;
    Z | '') helper=; return 1 ;;  # it finished first: wait for the next capture
    *) return 1 ;;  # the stop is not delivered yet
  esac
}
t_wait_for 30 catch_helper
# Whatever happens next, never leave a stopped process behind.
T_PIDS+=("$helper")
helpers=$(pgrep -P "$T_DAEMON_PID" -f -- '--capture-helper' || true)
kill -9 "$T_DAEMON_PID"
{ wait "$T_DAEMON_PID"; } 2>/dev/null || true
[ "$(state "$helper")" = T ] || t_fail "capture helper $helper did not survive until the daemon died"
kill -CONT "$helper"
no_helper() { for p in $helper $helpers; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
t_wait_for 15 no_helper
unmounted() { ! t_is_stillfs "$mnt"; }
t_wait_for 10 unmounted
wait "$reader" 2>/dev/null || true
ls "$mnt" >/dev/null || t_fail "the mountpoint is unusable after the daemon died"
echo "# daemon-kill: ok (capture helper $helper was mid-capture at the kill and exited after it)"
