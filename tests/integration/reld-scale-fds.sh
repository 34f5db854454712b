#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A store far larger than the daemon's descriptor limit is reachable whole, and the daemon's
# descriptors stay bounded whatever the kernel holds: nodes past the budget close their
# descriptors and reopen them by file handle when used again.
# 100,000 files in the suite (STILLFS_SCALE_FILES=1000000 for the full test, about 3.5 minutes
# here) in directories of 400, the daemon at RLIMIT_NOFILE
# 1024, and 2,000 of the files pinned in the kernel by inotify watches through the mount (the
# kernel cannot forget those inodes, so pruning alone cannot make room): find lists every
# file, a stat of every file succeeds, a sample reads back its content, and the daemon never
# holds more than 1024 descriptors.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
N=${STILLFS_SCALE_FILES:-100000}
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
python3 - "$store" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range((n + 399) // 400):
    dp = os.path.join(root, "d%04d" % d)
    os.mkdir(dp)
    dfd = os.open(dp, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(d * 400, min(n, (d + 1) * 400)):
        fd = os.open("f%07d" % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
        os.write(fd, b"%d\n" % i)
        os.close(fd)
    os.close(dfd)
PY
ulimit -n 1024
t_mount "$store" "$mnt"
[ "$(awk '/^Max open files/ { print $4 }' "/proc/$T_DAEMON_PID/limits")" = 1024 ] ||
  t_fail "the daemon's descriptor limit is not 1024"

# The most descriptors the daemon held, sampled until the end of the test.
watch_fds() {
  local max=0 n
  while kill -0 "$T_DAEMON_PID" 2>/dev/null; do
    n=$(ls "/proc/$T_DAEMON_PID/fd" 2>/dev/null | wc -l)
    if ((n > max)); then max=$n; echo "$max" >"$T_WORK/maxfd"; fi
    sleep 0.05
  done
}
echo 0 >"$T_WORK/maxfd"
t_bg watch_fds

# Inodes the kernel must keep: 2,000 files under inotify watches, held until the end.
mkfifo "$T_WORK/go"
cat >"$T_WORK/watch.py" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
ifd = libc.inotify_init()
n = 0
for d in ("d0000", "d0001", "d0002", "d0003", "d0004"):
    for f in sorted(os.listdir(os.path.join(sys.argv[1], d))):
        if libc.inotify_add_watch(ifd, os.path.join(sys.argv[1], d, f).encode(), 2) < 0:
            sys.exit("inotify_add_watch %s/%s: %s" % (d, f, os.strerror(ctypes.get_errno())))
        n += 1
open(sys.argv[2] + "/watched", "w").write("%d\n" % n)
open(sys.argv[2] + "/go").read()
PY
t_bg python3 "$T_WORK/watch.py" "$mnt" "$T_WORK" 2>"$T_WORK/watch.err"
watcher=$!
watching() { [ -s "$T_WORK/watched" ] || ! kill -0 "$watcher" 2>/dev/null; }
t_wait_for 60 watching
[ -s "$T_WORK/watched" ] || t_fail "the inotify holder failed: $(tail -1 "$T_WORK/watch.err")"
[ "$(cat "$T_WORK/watched")" = 2000 ] || t_fail "watched $(cat "$T_WORK/watched") files, not 2000"

n=$(find "$mnt" -path "$mnt/.snapshot" -prune -o -type f -print 2>"$T_WORK/err" | wc -l)
[ -s "$T_WORK/err" ] && t_fail "find: $(head -3 "$T_WORK/err")"
[ "$n" = "$N" ] || t_fail "find listed $n files, not $N"
n=$(find "$mnt" -path "$mnt/.snapshot" -prune -o -type f -printf '%s\n' 2>"$T_WORK/err" | grep -c '^[0-9]')
[ -s "$T_WORK/err" ] && t_fail "stat: $(head -3 "$T_WORK/err")"
[ "$n" = "$N" ] || t_fail "stat reached $n files, not $N"
for i in $(shuf -i 0-$((N - 1)) -n 500) 0 $((N - 1)); do
  f=$(printf '%s/d%04d/f%07d' "$mnt" $((i / 400)) "$i")
  [ "$(cat "$f")" = "$i" ] || t_fail "$f does not read back its content"
done
echo >"$T_WORK/go"
wait "$watcher" || t_fail "the inotify holder failed"
max=$(cat "$T_WORK/maxfd")
((max > 0 && max <= 1024)) || t_fail "the daemon held $max descriptors (limit 1024)"
t_log_clean "$T_DAEMON_LOG"
t_unmount "$mnt"
echo "ok: $N files found, stat'ed and sampled with the daemon at RLIMIT_NOFILE 1024 (at most $max descriptors)"
