#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Directory handles cannot make the daemon run out of memory. Each open handle of a live
# directory (below the root) holds a DIR stream of the backing directory, and glibc gives each
# stream a buffer of 32 KiB (st_blksize, at least 32 KiB), which the first readdir of a
# directory of more than a few hundred names fills. Only the handle's descriptor is charged to
# its user (-o max_user_fds, by default a quarter of what is left of RLIMIT_NOFILE: about
# 98,000 under systemd's 524,288), not that memory: one user holding their handles could make
# the daemon hold about 3 GiB, and four users about 11 GiB, where the listings of the root are
# held to 32 MiB a user and 128 MiB for all of them (reld-attack-rootlist).
#
# Here: the daemon runs with systemd's default descriptor limit for services (524,288) where
# the test may raise its own, else with the test's; the user opens their own directory of 2,000
# names through the mount until refused (ENOMEM: 32 MiB of streams, or EMFILE: max_user_fds)
# or 10,000 times, and reads each handle once. The daemon must not grow by more than 40 MiB
# for it: the 32 MiB a user's directory streams and root listings may hold, and the
# allocator's overhead.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
handles=${STILLFS_DIRMEM_HANDLES:-10000}
# systemd's default hard limit for a service, which the daemon raises its own to
ulimit -Hn 524288 2>/dev/null && ulimit -n 524288 2>/dev/null || true
t_attacker sfdm
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt" "$T_WORK/u" && chown "$user" "$T_WORK/u" && chmod 1777 "$store/pub"
py=$(command -v python3.11 || command -v python3)
[[ $py == /usr/* ]] || py=/usr/bin/python3   # a pyenv shim under /root is not the user's to run
as_user "$py" - "$store/pub/big" <<'EOF' || t_fail "setup: the user cannot fill their directory"
import os, sys
os.mkdir(sys.argv[1])
for i in range(2000):
    open("%s/name-%05d" % (sys.argv[1], i), "w").close()
EOF
t_mount "$store" "$mnt" -o auto_unmount,allow_other
rss() { awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$T_DAEMON_PID/status"; }
before=$(rss)
t_log "daemon RSS before: $before MiB (descriptor limit $(ulimit -n))"

# setpriv itself in the background: $! must be the process that becomes python.
setpriv --reuid "$user" --regid "$user" --init-groups -- "$py" - "$mnt/pub/big" "$handles" "$T_WORK/u/held" <<'EOF' &
import ctypes, errno, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(4096)
fds, failed = [], 0
for i in range(int(sys.argv[2])):
    try:
        fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise
        failed += 1
        break
    # one getdents64 (217 on x86-64, 61 on arm64): one readdir by the daemon for this handle
    if libc.syscall(217 if os.uname().machine == "x86_64" else 61, fd, buf, 4096) < 0:
        raise OSError(ctypes.get_errno(), "getdents64")
    fds.append(fd)
with open(sys.argv[3] + ".tmp", "w") as f:
    f.write("%d %d\n" % (len(fds), failed))
os.rename(sys.argv[3] + ".tmp", sys.argv[3])
time.sleep(3600)
EOF
holder=$!
T_PIDS+=("$holder")
held() { [ -e "$T_WORK/u/held" ] || ! kill -0 "$holder" 2>/dev/null; }
t_wait_for 300 held
[ -e "$T_WORK/u/held" ] || t_fail "the user's directory handles failed otherwise than with ENOMEM or EMFILE"
read -r got refused <"$T_WORK/u/held"
after=$(rss)
t_log "daemon RSS with the user's $got directory handles (each read once; $refused refused): $after MiB"
kill "$holder" && wait "$holder" 2>/dev/null || true
reld_forget "$holder"
((after - before < 40)) ||
  t_fail "one user's $got directory handles made the daemon grow by $((after - before)) MiB ($(((after - before) * 1024 / (got > 0 ? got : 1))) KiB each)"
t_unmount "$mnt"
echo "PASS: one user's directory handles cost the daemon less than 40 MiB"
