#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A lease cannot hold the daemon's request threads. The owner of a file may take a lease on
# it (F_SETLEASE); an open that conflicts waits until the holder lets go or lease-break-time
# (45 s) passes. The daemon opened live files for their callers with blocking opens, so a user
# who held a write lease on a file of theirs in the store and opened it through the mount more
# times than the daemon has request threads (64) stalled the whole mount, for every user, for
# as long as they kept it up. Now the daemon's opens never wait for a lease: the caller gets
# EWOULDBLOCK at once, the holder is told to let go, and:
# - root reads another file through the mount while 80 such opens are under way;
# - the opens fail with EWOULDBLOCK instead of waiting;
# - once the lease is gone the file opens as before.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfls
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt" "$T_WORK/u" && chown "$user" "$T_WORK/u" && chmod 1777 "$store/pub"
echo other >"$store/other" && chmod 644 "$store/other"
as_user sh -c "echo mine >'$store/pub/leased'"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
py=$(command -v python3.11 || command -v python3)
[[ $py == /usr/* ]] || py=/usr/bin/python3   # a pyenv shim under /root is not the user's to run

# The lease holder ignores the kernel's request to let go. (setpriv itself in the background:
# $! must be the process that becomes python.)
setpriv --reuid "$user" --regid "$user" --init-groups -- "$py" - "$store/pub/leased" "$T_WORK/u/leased" <<'EOF' &
import fcntl, os, signal, sys, time
signal.signal(signal.SIGIO, lambda *a: None)
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)   # F_SETLEASE
open(sys.argv[2], "w").close()
time.sleep(3600)
EOF
holder=$!
T_PIDS+=("$holder")
leased() { [ -e "$T_WORK/u/leased" ]; }
t_wait_for 20 leased

openers=()
for i in $(seq 80); do
  setpriv --reuid "$user" --regid "$user" --init-groups -- cat "$mnt/pub/leased" \
    >/dev/null 2>"$T_WORK/u/open.$i" &
  openers+=("$!")
done
T_PIDS+=("${openers[@]}")
# Each opener has either finished or is waiting in the mount for the daemon's answer.
settled() {
  local p w
  for p in "${openers[@]}"; do
    w=$(cat "/proc/$p/wchan" 2>/dev/null) || continue
    [[ $w == *fuse* || $w == request_wait_answer ]] || return 1
  done
}
t_wait_for 20 settled
out=$(timeout 10 cat "$mnt/other" 2>&1) ||
  t_fail "root's read of another file stalled while a lease held the daemon's threads (${out:-timed out})"
[ "$out" = other ] || t_fail "root read '$out'"
for p in "${openers[@]}"; do wait "$p" 2>/dev/null || true; done
reld_forget "${openers[@]}"
grep -q 'Resource temporarily unavailable' "$T_WORK/u/open.1" ||
  t_fail "an open of the leased file: $(cat "$T_WORK/u/open.1")"

kill "$holder" && wait "$holder" 2>/dev/null || true
reld_forget "$holder"
[ "$(as_user cat "$mnt/pub/leased")" = mine ] || t_fail "the file does not open once the lease is gone"
t_unmount "$mnt"
echo "PASS: a lease held on a store file does not stall the daemon"
