#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# No lost locks when the kernel reuses a file pointer: the owner id of an OFD lock taken
# through the mount is derived from the file pointer, which a new open may get back while the
# daemon still processes the release of the file that had it. Many threads open, lock and
# close in a tight loop; every lock a thread believes it holds must be seen on STORE.
source "$(dirname "$0")/lib.sh"
: "${LOCKRACE:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo data >"$store/lockme"
t_mount "$store" "$mnt" -o snapshot_max_age=0,snapshot_linger=0

out=$("$LOCKRACE" "$mnt/lockme" "$store/lockme" "${LOCKRACE_THREADS:-16}" "${LOCKRACE_SECONDS:-20}") ||
  t_fail "locks lost or failed: $out"
t_log "$out"
# Every descriptor is closed and released: no lock may be left on STORE.
t_wait_for 20 python3 -c 'import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)' "$store/lockme"

t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# daemon-lockrace: ok"
