#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The root daemon's own output paths, -o cache= and -o metrics_file=, given by the
# administrator below a directory an unprivileged user (made with useradd) owns. The user
# makes the last directory on the way a symlink to a root-owned directory of their choice
# before the daemon starts: the daemon must refuse to start (one line naming the directory
# others may change) rather than chmod that directory 0700 and fill it (cache), or create a
# file in it (metrics). Controls: the same options without the symlink in a directory only
# root writes are accepted, and a metrics directory the user owns, reached through root's
# directories only, is fine too (written by descriptor only).
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${STILLCTL:?}"
t_attacker sfpa
store=$T_WORK/store mnt=$T_WORK/mnt u=$T_WORK/u victim=$T_WORK/victim
mkdir -p "$store" "$mnt" "$u" "$victim"
echo data >"$store/file"
chown "$user:$user" "$u"
chmod 755 "$victim"

# start_refused WHAT OPTIONS: the daemon must exit non-zero, saying why, without mounting.
start_refused() {
  local what=$1 rc=0; shift
  timeout 20 "$STILLFS" "$store" "$mnt" -f -o auto_unmount "$@" >"$T_WORK/start.log" 2>&1 &
  local pid=$!
  T_PIDS+=("$pid")
  wait_start() { ! kill -0 "$pid" 2>/dev/null || t_is_stillfs "$mnt"; }
  t_wait_for 20 wait_start
  if t_is_stillfs "$mnt"; then
    T_MOUNTS+=("$mnt")
    t_fail "$what: the daemon started (victim now: $(stat -c %a "$victim"), $(ls -A "$victim" | tr '\n' ' '))"
  fi
  wait "$pid" || rc=$?
  [ "$rc" != 0 ] || t_fail "$what: the daemon exited 0"
  grep -q "others may change" "$T_WORK/start.log" || t_fail "$what: the daemon said: $(cat "$T_WORK/start.log")"
  [ "$(stat -c %a "$victim")" = 755 ] && [ -z "$(ls -A "$victim")" ] ||
    t_fail "$what: the daemon changed $victim: $(stat -c %a "$victim") $(ls -A "$victim")"
}

as_user ln -s "$victim" "$u/c"
start_refused "cache through the user's symlink" -o "cache=$u/c"
as_user rm "$u/c"
as_user ln -s "$victim" "$u/prom"
start_refused "metrics_file through the user's symlink" -o "cache=$T_WORK/cache,metrics_file=$u/prom/stillfs.prom"

# Controls.
as_user rm "$u/prom"
t_mount "$store" "$mnt" -o auto_unmount,metrics_file="$u/stillfs.prom"
# Written right after the mount comes up, not before.
metrics_there() { [ -s "$u/stillfs.prom" ]; }
t_wait_for 10 metrics_there
[ "$(stat -c %u "$u/stillfs.prom")" = 0 ] || t_fail "control: the metrics file is not root's"
t_unmount "$mnt"
t_log "OK"
