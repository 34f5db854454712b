#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A store with more files than the daemon keeps nodes for (-o max_nodes) must still be walked
# whole, live and through .snapshot: past 3/4 of the budget the daemon asks the kernel to
# forget the least recently used inodes (FUSE_NOTIFY_PRUNE); where nodes hold a descriptor
# each (no file handles), a lookup at the budget waits for that.
# 6,000 files in 60 directories with room for 1,000 nodes: every file is stat'ed and read by
# find and tar, no lookup fails, the daemon's descriptors stay within the budget.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
python3 - "$store" <<'PY'
import os, sys
for i in range(6000):
    d = os.path.join(sys.argv[1], "d%02d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%04d" % i), "w") as f:
        f.write("file %d\n" % i)
PY
t_mount "$store" "$mnt" -o max_nodes=1000
n=$(find "$mnt" -path "$mnt/.snapshot" -prune -o -type f -printf '%s\n' 2>"$T_WORK/err1" | wc -l)
[ -s "$T_WORK/err1" ] && t_fail "live walk: $(head -3 "$T_WORK/err1")"
[ "$n" = 6000 ] || t_fail "live walk found $n files, not 6000"
n=$(tar cf - -C "$mnt/.snapshot" . 2>"$T_WORK/err2" | tar tvf - | grep -c '/f[0-9]*$')
[ -s "$T_WORK/err2" ] && t_fail "tar of .snapshot: $(head -3 "$T_WORK/err2")"
[ "$n" = 6000 ] || t_fail "tar of .snapshot holds $n files, not 6000"
tar cf - -C "$mnt/.snapshot" ./d42 | tar xf - -C "$T_WORK" && diff -r "$store/d42" "$T_WORK/d42" >/dev/null ||
  t_fail "a directory read back through .snapshot differs from the store"
fds=$(ls "/proc/$T_DAEMON_PID/fd" | wc -l)
((fds < 1300)) || t_fail "the daemon holds $fds descriptors with max_nodes=1000"
t_log_clean "$T_DAEMON_LOG"
t_unmount "$mnt"
echo "ok: 6,000 files walked live and through .snapshot with max_nodes=1000 ($fds descriptors at the end)"
