#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What systemd sees of the daemon, without systemd: a fake notification socket (a path, then
# an abstract one) receives READY=1 only once the mount is up, STATUS= after each capture (a
# good one and a failed one), and STOPPING=1 at unmount; capture helpers do not inherit
# NOTIFY_SOCKET. With JOURNAL_STREAM naming its stderr, every log line carries a syslog
# priority prefix (<3> error, <4> warning, <6> info), the capture helper's relayed lines
# included, and without it none does.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo hello >"$store/f"

# fake_notify ADDRESS OUT: receive datagrams at ADDRESS ('@': abstract), one line each in OUT.
fake_notify() {
  python3 -u - "$1" "$2" <<'EOF' &
import socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + addr[1:] if addr.startswith("@") else addr)
open(sys.argv[2] + ".ready", "w").close()
with open(sys.argv[2], "a") as out:
    while True:
        msg = s.recv(4096).decode()
        out.write(msg.replace("\n", "|") + "\n")
        out.flush()
EOF
  T_PIDS+=("$!")
  t_wait_for 10 test -e "$2.ready"
}
has() { grep -q -- "$2" "$1" 2>/dev/null; }

run() {
  local addr=$1 out=$2 log=$T_WORK/daemon.mnt.log
  fake_notify "$addr" "$out"
  rm -f "$log"; touch "$log"
  # The daemon's stderr is this file: JOURNAL_STREAM names it as systemd would its stream.
  export JOURNAL_STREAM=$(stat -c %d:%i "$log") NOTIFY_SOCKET=$addr
  t_mount "$store" "$mnt" -o settle_timeout=1
  unset JOURNAL_STREAM NOTIFY_SOCKET
  t_wait_for 10 has "$out" "READY=1"
  t_is_stillfs "$mnt" || t_fail "READY=1 before the mount was up"
  # The helper's environment: no NOTIFY_SOCKET (it could tell systemd anything).
  t_bg bash -c "while :; do echo x >>'$store/busy'; sleep 0.05; done"
  local writer=$!
  "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 &
  local refresh=$! helper
  helper_up() { helper=$(pgrep -P "$T_DAEMON_PID" | head -1); [ -n "$helper" ]; }
  t_wait_for 10 helper_up
  tr '\0' '\n' <"/proc/$helper/environ" | grep -q '^NOTIFY_SOCKET=' &&
    t_fail "the capture helper inherited NOTIFY_SOCKET"
  wait "$refresh" && t_fail "refresh of a store that never settles succeeded"
  t_wait_for 10 has "$out" "STATUS=last capture failed"
  kill "$writer"; wait "$writer" 2>/dev/null || true
  "$STILLCTL" refresh "$mnt" >/dev/null || t_fail "refresh failed"
  t_wait_for 10 has "$out" "STATUS=serving generation 1 "
  t_unmount "$mnt"
  t_wait_for 10 has "$out" "STOPPING=1"
  [ "$(grep -c READY=1 "$out")" = 1 ] || t_fail "READY=1 sent $(grep -c READY=1 "$out") times"
  cat "$out" >&2
}

run "$T_WORK/notify.sock" "$T_WORK/notify.path"
log=$T_WORK/daemon.mnt.log
bad=$(grep -v '^<[0-7]>' "$log" || true)
[ -z "$bad" ] || { echo "$bad" >&2; t_fail "log lines without a priority prefix under JOURNAL_STREAM"; }
grep -q '^<6>serving ' "$log" || t_fail "no <6> info line"
grep -q '^<3>capture failed' "$log" || t_fail "the failed capture is not logged at <3>"
grep -q '^<6>capture: snapshot ' "$log" || t_fail "the capture helper's lines are not relayed at <6>"
grep -q '^<[0-7]><' "$log" && t_fail "a line with two priority prefixes"

# An abstract socket, and no JOURNAL_STREAM of ours: plain lines.
rm -rf "$T_WORK"/cache.mnt
run "@stillfs-ops-$$" "$T_WORK/notify.abstract"
mv "$T_WORK/daemon.mnt.log" "$T_WORK/journal.log"
JOURNAL_STREAM=1:1 t_mount "$store" "$mnt"
t_unmount "$mnt"
grep -q '^stillfs: serving ' "$T_DAEMON_LOG" || t_fail "a JOURNAL_STREAM of another stream changed the log format"
grep -q '^<' "$T_DAEMON_LOG" && t_fail "priority prefixes without the journal"
echo "ok: sd_notify and journal priorities"
