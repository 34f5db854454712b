#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A reader's lock cannot stop an executable from being run. A POSIX lock taken through the
# mount gets a descriptor of the store file per lock owner (lock.c), opened by the daemon as
# root and read-write "if at all possible". For a user who may only read the file, that is
# more than they could do themselves: while the daemon holds a file open for writing, nobody
# can run it (execve fails with ETXTBSY), its owner and root included. A user who may read
# another user's program in the store, and takes a read lock on it through the mount - which
# needs nothing but a read-only descriptor - keeps everyone from running it directly for as
# long as they hold the lock. (reld-attack-reader shows the same kept away from passthrough
# backing files, which a live executable does not get.)
#
# The defence this checks: while the user holds a read lock on the program through the mount,
# the program still runs (directly on the store), and the lock itself works (another process's
# write lock on the store conflicts with it).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfle
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt" "$T_WORK/u" && chown "$user" "$T_WORK/u"
cp /bin/true "$store/prog" && chown daemon:daemon "$store/prog" && chmod 755 "$store/prog"
t_mount "$store" "$mnt" -o auto_unmount,allow_other
py=$(command -v python3.11 || command -v python3)
[[ $py == /usr/* ]] || py=/usr/bin/python3   # a pyenv shim under /root is not the user's to run

"$store/prog" || t_fail "the program does not run before the attack"
# The user may only read the program: their open for writing fails.
if as_user sh -c ": >>'$mnt/prog'" 2>/dev/null; then t_fail "the user may write the program"; fi

# setpriv itself in the background: $! must be the process that becomes python.
setpriv --reuid "$user" --regid "$user" --init-groups -- "$py" - "$mnt/prog" "$T_WORK/u/held" <<'EOF' &
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0)   # F_SETLK, F_RDLCK on byte 0
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write("locked\n")
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(3600)
EOF
holder=$!
T_PIDS+=("$holder")
held() { [ -e "$T_WORK/u/held" ] || ! kill -0 "$holder" 2>/dev/null; }
t_wait_for 20 held
[ -e "$T_WORK/u/held" ] || t_fail "the user could not take a read lock on the program through the mount"

# The lock is real: a write lock on the store conflicts with it.
if "$py" -c 'import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)' "$store/prog" 2>/dev/null; then
  t_fail "the user's read lock taken through the mount does not reach the store"
fi
out=$("$store/prog" 2>&1) || {
  writers=$(find /proc/"$T_DAEMON_PID"/fd -lname "$store/prog" 2>/dev/null | wc -l)
  t_fail "root cannot run the program while a user who may only read it holds a read lock on it through the mount ($out; the daemon holds $writers descriptors of it)"
}
out=$(setpriv --reuid daemon --regid daemon --clear-groups -- "$store/prog" 2>&1) ||
  t_fail "the program's owner cannot run it while a user holds a read lock on it through the mount ($out)"
kill "$holder" && wait "$holder" 2>/dev/null || true
reld_forget "$holder"
t_unmount "$mnt"
echo "PASS: a reader's lock through the mount does not stop the program from being run"
