#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Names in the daemon's log and status file (root daemon, -o allow_other):
# - a file name holding a newline or a backslash (here: fifos, which captures skip with a
#   warning that names them) stays on its warning's line, escaped as \n and \\, and adds no
#   line of its own to the log;
# - after a failed capture (the store removed), the world-readable status file tells an
#   unprivileged user (made with useradd) only the kind of failure, never the message with
#   its paths; root and the store's owner see the message in full.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${STILLCTL:?}"
t_attacker sflog
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
chmod 755 "$store"
echo data >"$store/file"
mkfifo "$store/evil"$'\n'"FORGED: capture failed" "$store/back\\slash"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
[ "$(cat "$mnt/.snapshot/file")" = data ] || t_fail "no snapshot"
forged=$(grep 'FORGED' "$T_DAEMON_LOG" | grep -vF 'evil\nFORGED' || true)
[ -z "$forged" ] || t_fail "a file name made a log line of its own: $forged"
grep -qF 'evil\nFORGED: capture failed' "$T_DAEMON_LOG" || t_fail "the newline in a name is not escaped: $(cat "$T_DAEMON_LOG")"
grep -qF 'back\\slash' "$T_DAEMON_LOG" || t_fail "the backslash in a name is not escaped: $(cat "$T_DAEMON_LOG")"

rm -rf "$store"
"$STILLCTL" refresh "$mnt" >/dev/null 2>&1 && t_fail "a capture of a removed store succeeded"
full=$(t_status "$mnt" last_error)
grep -q "$store.*vanished" <<<"$full" || t_fail "root's status does not give the message: $full"
mine=$(as_user cat "$mnt/.stillfs-status" | awk '$1 == "last_error:" { sub(/^[^ ]+ /, ""); print }')
grep -Eq '^capture failed: [A-Za-z ]+$' <<<"$mine" ||
  t_fail "an unprivileged user's status says: '$mine' (root's: '$full')"
t_log "OK"
