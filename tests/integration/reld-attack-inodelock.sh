#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A user who holds the inode lock of a store file of theirs can make every request thread of
# the daemon wait for it, and hang the mount for everyone.
#
# The daemon serves each request in one of its threads (max_threads), which waits in whatever
# system call the request needs. An open with O_TRUNC through the mount is served by an open
# with O_TRUNC of the store file, which waits for that file's inode lock (i_rwsem); the kernel
# sends such opens to the daemon all at once (FUSE serializes them only with a writeback
# cache, which stillfs does not use). A write(2) holds the file's inode lock while it faults
# in its source buffer, and the user makes that buffer a mapping of a file of theirs read
# through the mount itself (an executable file: served by the daemon, no passthrough). So:
#   - the user's writer W writes their store file F directly from a mapping of their file G
#     read through the mount: W holds F's inode lock while each page of G is read by the
#     daemon;
#   - the user's openers open F through the mount with O_TRUNC, over and over: each open that
#     arrives while W holds the lock takes a request thread and keeps it;
#   - once every request thread waits for F, the read W needs next has no thread left to
#     serve it: W never lets go of F, and nothing the mount is asked is ever answered again -
#     for root and every user, the capture's write-back through the mount included - until
#     someone kills W.
# No mount of the user's own, no allow_other, no setting of root's: an executable file, a
# file the user may write in the store, and processes.
#
# The defence this checks: while the user attacks, root is answered (a stat of a name the
# kernel has not seen, the status file).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import ctypes, mmap' 2>/dev/null || t_fail "python3 is needed"

t_attacker sfil
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt"
chmod 1777 "$store/pub"
as_user touch "$store/pub/F"
as_user truncate -s 64M "$store/pub/G"
as_user chmod 755 "$store/pub/G"       # executable: no passthrough, the daemon reads it
t_mount "$store" "$mnt" -o auto_unmount,allow_other
threads=$(t_status "$mnt" request_threads_max)
t_log "passthrough: $(t_status "$mnt" passthrough), request threads: $threads"

cat >"$T_WORK/user.py" <<'PY'
import ctypes, mmap, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
what = sys.argv[1]
if what == "writer":
    # write F (directly on the store) from G mapped through the mount, again and again:
    # each pass holds F's inode lock while G's pages are read through the mount
    f, g = sys.argv[2], sys.argv[3]
    fd = os.open(f, os.O_WRONLY)
    print("ready", flush=True)
    while True:
        gfd = os.open(g, os.O_RDONLY)     # a fresh open: G's pages are read again
        m = mmap.mmap(gfd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
        try:
            os.pwrite(fd, m, 0)
        except OSError:
            pass
        m.close()
        os.close(gfd)
else:
    # n processes opening F through the mount with O_TRUNC, over and over
    f, n = sys.argv[2], int(sys.argv[3])
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            libc.prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG: go with the parent
            while True:
                try:
                    os.close(os.open(f, os.O_WRONLY | os.O_TRUNC))
                except OSError:
                    pass
        kids.append(pid)
    def stop(*_):
        for k in kids:
            os.kill(k, signal.SIGKILL)
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while True:
        signal.pause()
PY
chmod 644 "$T_WORK/user.py"
stop_user() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# Root is answered before the attack.
echo before >"$store/probe0"
timeout -s KILL 10 stat "$mnt/probe0" >/dev/null || t_fail "root's stat did not answer before the attack"

reld_user_py "$T_WORK/user.py" openers "$mnt/pub/F" $((threads + 16))
openers=$upid
reld_user_py "$T_WORK/user.py" writer "$store/pub/F" "$mnt/pub/G"
writer=$upid

# For 10 s, root must be answered within 10 s each time: a stat of a name the kernel has not
# seen (a lookup the daemon must serve), and the status file.
hung=""
i=0
end=$((SECONDS + 10))
while ((SECONDS < end)); do
  i=$((i + 1))
  echo "$i" >"$store/probe$i"
  if ! timeout -s KILL 10 stat "$mnt/probe$i" >/dev/null 2>&1; then
    hung="a stat of $mnt/probe$i"
    break
  fi
  if ! timeout -s KILL 10 cat "$mnt/.stillfs-status" >"$T_WORK/status" 2>/dev/null; then
    hung="a read of the status file"
    break
  fi
done
if [ -n "$hung" ]; then
  blocked=$(grep -l -e do_truncate -e ext4_setattr -e rwsem_down_write /proc/"$T_DAEMON_PID"/task/*/stack 2>/dev/null | wc -l || true)
  t_log "root's $hung got no answer within 10 s; $blocked daemon threads wait for a lock"
  # For good, not for one slow write: the writer waits for a read no thread is left to serve.
  forgood=no
  timeout -s KILL 20 cat "$mnt/.stillfs-status" >/dev/null 2>&1 || forgood=yes
  t_log "still no answer to root 20 s later: $forgood"
  # Killing the user's writer undoes it (the mount serves again), so that cleanup can unmount.
  stop_user "$writer" "$openers"
  t_wait_for 60 timeout -s KILL 5 cat "$mnt/.stillfs-status" >/dev/null
  t_fail "the user's opens with O_TRUNC of a file whose inode lock they hold took every request thread: root's $hung got no answer within 10 s (still none 20 s later: $forgood; $blocked daemon threads waiting for a lock)"
fi
t_log "$i rounds: root answered each time while the user attacked"
stop_user "$writer" "$openers"
# The killed openers leave once their opens, waiting for the writer's lock, return.
t_wait_for 60 eval '! pgrep -u "$user" >/dev/null'
t_unmount "$mnt"
echo "PASS: a user holding a store file's inode lock cannot take every request thread: root is answered"
