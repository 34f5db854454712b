#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A user who may write a directory of the store can hold every capture for as long as they
# like, without a mount inside the store and without allow_other (what SECURITY.md's first
# undefended item needs): settle_timeout does not bound a capture whose helper waits in a
# system call.
#
# Any user may mount a FUSE file system of their own (fusermount3 is set-user-ID root), and a
# process reading a page of it waits until its daemon answers: its owner stops the daemon
# (SIGSTOP) and the read waits for good. Then:
#   - the user's writer W writes their store file pub/F directly from a page of their own FUSE
#     mount: write(2) holds F's inode lock while it faults the page in, for good;
#   - the user's rm of pub/F directly in the store takes the lock of the directory pub, then
#     waits for F's: it holds pub's lock for good;
#   - every capture lists pub, and that listing waits for pub's lock: the capture never ends.
#     Openers of .snapshot wait for it (or get EBUSY), the previous generation is not served,
#     uploads stop, and `capturing: yes` stays, until the user lets go.
# (The user's own FUSE daemon here is stillfs itself, run by the user on a store of theirs.)
#
# The defence this checks: a capture root asks for ends within a bound (settle_timeout and
# some), failed if need be, and .snapshot answers.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import mmap, signal' 2>/dev/null || t_fail "python3 is needed"

t_attacker sfcs
store=$T_WORK/store mnt=$T_WORK/mnt u=$T_WORK/u
mkdir -p "$store/pub" "$mnt" "$u"
chmod 1777 "$store/pub"
echo data >"$store/file"
as_user touch "$store/pub/F"
chown "$user:" "$u"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,settle_timeout=5,snapshot_max_age=0,snapshot_linger=0
# A first generation, which the daemon could go on serving.
ls "$mnt/.snapshot/" >/dev/null || t_fail "no first generation"

# The user's own FUSE mount. On a stock system any user makes one (/dev/fuse is 0666 and
# fusermount3 set-user-ID root) and stops its daemon at will; where /dev/fuse is root's alone
# (containers, this test machine), root makes it for the user: a second stillfs, with
# allow_other, of a directory holding the user's file, stopped by the test as the user would
# stop their own.
if setpriv --reuid "$user" --regid "$user" --init-groups -- test -r /dev/fuse -a -w /dev/fuse; then
  as_user mkdir "$u/store" "$u/mnt"
  as_user sh -c "head -c 1048576 /dev/urandom >'$u/store/z'"
  setpriv --reuid "$user" --regid "$user" --init-groups -- \
    "$STILLFS" "$u/store" "$u/mnt" -f -o "cache=$u/cache,no_passthrough" >"$T_WORK/stall.log" 2>&1 &
  t_log "the stalling FUSE mount is the user's own"
else
  mkdir "$T_WORK/sstore" "$u/mnt"
  head -c 1048576 /dev/urandom >"$T_WORK/sstore/z"
  chown "$user:" "$T_WORK/sstore/z" "$u/mnt"
  "$STILLFS" "$T_WORK/sstore" "$u/mnt" -f -o "cache=$T_WORK/scache,allow_other,no_passthrough" >"$T_WORK/stall.log" 2>&1 &
  t_log "/dev/fuse is root's alone here: root makes the stalling FUSE mount for the user"
fi
udaemon=$!
T_PIDS+=("$udaemon")
T_MOUNTS+=("$u/mnt")
t_wait_for 20 t_is_stillfs "$u/mnt"

cat >"$T_WORK/user.py" <<'PY'
import mmap, os, signal, sys
# W: F opened directly in the store, a page of the user's own FUSE file mapped; on SIGUSR1,
# write F from that page
f, z = sys.argv[1], sys.argv[2]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
fd = os.open(f, os.O_WRONLY)
zfd = os.open(z, os.O_RDONLY)
m = mmap.mmap(zfd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
print("ready", flush=True)
signal.sigwait([signal.SIGUSR1])
os.pwrite(fd, m, 0)
print("written", flush=True)
PY
chmod 644 "$T_WORK/user.py"
setpriv --reuid "$user" --regid "$user" --init-groups -- \
  /usr/bin/python3 "$T_WORK/user.py" "$store/pub/F" "$u/mnt/z" >"$T_WORK/w.out" 2>&1 &
writer=$!
T_PIDS+=("$writer")
t_wait_for 20 grep -q ready "$T_WORK/w.out"

# The user stops their FUSE daemon; W writes F from the page it cannot get.
kill -STOP "$udaemon"
kill -USR1 "$writer"
in_write() { grep -q ext4_buffered_write_iter "/proc/$writer/stack" 2>/dev/null; }
t_wait_for 20 in_write
# The user removes F: the rm holds the directory's lock, waiting for F's.
setpriv --reuid "$user" --regid "$user" --init-groups -- rm -f "$store/pub/F" &
remover=$!
T_PIDS+=("$remover")
in_unlink() { grep -q vfs_unlink "/proc/$remover/stack" 2>/dev/null; }
t_wait_for 20 in_unlink
t_log "the user holds the inode lock of pub/F (write) and of pub (unlink)"

release() {  # the user lets go: their daemon answers, W writes, the rm ends
  kill -CONT "$udaemon" 2>/dev/null || true
  wait "$writer" 2>/dev/null || true
  wait "$remover" 2>/dev/null || true
}

# Root asks for a new generation: the capture must end within a bound, failed if need be.
rc=0
timeout -s KILL 60 ls "$mnt/.snapshot/" >"$T_WORK/ls.out" 2>&1 || rc=$?
if ((rc == 137)); then
  st=$(grep -E '^(capturing|capture_waiters|progress_phase|progress_files_done):' "$mnt/.stillfs-status" | tr '\n' ' ')
  release
  t_fail "a capture did not end within 60 s (settle_timeout=5) while a user held a lock of the store's directory pub: root's ls of .snapshot got no answer ($st)"
fi
t_log "root's ls of .snapshot: exit $rc"
[ "$(t_status "$mnt" capturing)" = no ] || { release; t_fail "still capturing after root's ls answered"; }
release
grep -q written "$T_WORK/w.out" || t_fail "the user's write did not end once their daemon went on"
kill "$udaemon" 2>/dev/null || true
wait "$udaemon" 2>/dev/null || true
t_unmount "$mnt"
echo "PASS: a capture ends within a bound while a user holds a lock of a store directory"
