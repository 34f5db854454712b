#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Listing the mount's root cannot make the daemon run out of memory. Each open handle of the
# root holds its own copy of the store root's names (the root hides stillfs's names and may
# show .snapshot, so it is listed from a copy). A user who may write the root filled it with
# long names and opened it hundreds of times (up to -o max_user_fds handles), and the daemon
# grew by the size of the root per handle until the kernel killed it. Now a user's root
# listings are charged to them (32 MiB per user, 128 MiB for all users but root); past that a
# listing of the root (or an open of any directory: each handle's stream is charged too)
# fails with ENOMEM. With 20,000 names of 200 bytes in a 1777 root:
# - 100 handles of the root, each listed, leave the daemon under 200 MiB (it was ~500 MiB);
# - some of them fail with ENOMEM, not all; root and another user still list the root whole
#   while the attacker holds them.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfrl
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt" "$T_WORK/u" && chown "$user" "$T_WORK/u" && chmod 1777 "$store"
py=$(command -v python3.11 || command -v python3)
[[ $py == /usr/* ]] || py=/usr/bin/python3   # a pyenv shim under /root is not the user's to run
as_user "$py" - "$store" <<'EOF' || t_fail "setup: the user cannot fill the root"
import sys
for i in range(20000):
    open("%s/n%05d%s" % (sys.argv[1], i, "x" * 194), "w").close()
EOF
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
rss() { awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$T_DAEMON_PID/status"; }
t_log "daemon RSS before: $(rss) MiB"

# setpriv itself in the background: $! must be the process that becomes python.
setpriv --reuid "$user" --regid "$user" --init-groups -- "$py" - "$mnt" 100 "$T_WORK/u/held" <<'EOF' &
import errno, os, sys, time
fds, failed = [], 0
for i in range(int(sys.argv[2])):
    try:
        # the open is refused too once the handles' streams and listings fill the budget
        fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
        fds.append(fd)
        os.listdir(fd)    # reads from the handle's own offset: the listing is loaded
    except OSError as e:
        if e.errno != errno.ENOMEM:
            raise
        failed += 1
with open(sys.argv[3] + ".tmp", "w") as f:
    f.write("%d\n" % failed)
os.rename(sys.argv[3] + ".tmp", sys.argv[3])
time.sleep(3600)
EOF
holder=$!
T_PIDS+=("$holder")
held() { [ -e "$T_WORK/u/held" ] || ! kill -0 "$holder" 2>/dev/null; }
t_wait_for 120 held
[ -e "$T_WORK/u/held" ] || t_fail "the attacker's listings failed otherwise than with ENOMEM"
failed=$(cat "$T_WORK/u/held")
t_log "daemon RSS with the attacker's 100 root handles: $(rss) MiB; $failed listings refused"
[ "$(rss)" -lt 200 ] || t_fail "the daemon grew to $(rss) MiB for one user's listings of the root"
[ "$failed" -gt 0 ] && [ "$failed" -lt 100 ] || t_fail "$failed of 100 listings refused"
n=$(ls -U "$mnt" | wc -l)
[ "$n" = 20000 ] || t_fail "root lists $n names of the root while the attacker holds their handles"
n=$(setpriv --reuid nobody --regid nogroup --clear-groups -- ls -U "$mnt" | wc -l)
[ "$n" = 20000 ] || t_fail "another user lists $n names of the root, or none"
kill "$holder" && wait "$holder" 2>/dev/null || true
reld_forget "$holder"
t_unmount "$mnt"
echo "PASS: listings of the root are charged to their user"
