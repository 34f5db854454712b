#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# One user must not be able to use up the root daemon's descriptors. Every handle opened
# through the mount and every lock owner costs the daemon one, so each user other than root
# may hold at most -o max_user_fds of them, and all users together leave root a reserve.
# A real unprivileged user (its own RLIMIT_NOFILE raised, so that only the daemon can stop
# it) opens the same file until it gets EMFILE, from two processes; while it holds all of
# them, root still reads and creates through the mount and another user still opens files.
# Once it lets go, it may open as many again.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
command -v setpriv >/dev/null || t_fail "setpriv (util-linux) is needed"
U1=sfattk1-$$ U2=sfattk2-$$
U1=${U1:0:31} U2=${U2:0:31}
HOLDERS=()
# A user with processes left cannot be removed: end the holders first.
del_users() {
  local p
  for p in "${HOLDERS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  userdel "$U1" 2>/dev/null
  userdel "$U2" 2>/dev/null
}
trap 'rc=$?; set +e; del_users; reld_untrace; (exit "$rc"); t_cleanup' EXIT
useradd -M -N -g nogroup -s /usr/sbin/nologin "$U1"
useradd -M -N -g nogroup -s /usr/sbin/nologin "$U2"
# as USER CMD...: run CMD as USER, with room for more descriptors than the daemon gives it.
as=(prlimit --nofile=20000:20000 setpriv --regid nogroup --clear-groups --reuid)

store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
chmod 755 "$T_WORK" "$store"
echo shared >"$store/f"
chmod 644 "$store/f"
cap=300
t_mount "$store" "$mnt" -o allow_other,auto_unmount,max_user_fds=$cap

# A python3 that any user can run (not a shim below root's home).
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
cat >"$T_WORK/hold.py" <<'PY'
import errno, os, sys
path, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fds, err = [], "none"
try:
    while len(fds) < n:
        fds.append(os.open(path, os.O_RDONLY))
except OSError as e:
    err = errno.errorcode[e.errno]
with open(d + "/count.tmp", "w") as f:
    f.write("%d %s\n" % (len(fds), err))
os.rename(d + "/count.tmp", d + "/count")
open(d + "/go").read()
PY
# hold DIR N: as the user, open $mnt/f until EMFILE (or N handles), write how many to
# DIR/count, then hold them until release DIR.
hold() {
  mkdir -p "$1"; chmod 777 "$1"; mkfifo -m 666 "$1/go"
  t_bg "${as[@]}" "$U1" -- "$PY" "$T_WORK/hold.py" "$mnt/f" "$1" "$2"
  HOLD_PID=$!
  HOLDERS+=("$HOLD_PID")
  t_wait_for 60 test -e "$1/count"
}
# release DIR: let the holder of DIR close its files and exit.
release() { echo >"$1/go"; wait "$2" || t_fail "a holder failed"; reld_forget "$2"; }

hold "$T_WORK/a" 200
a_pid=$HOLD_PID
[ "$(cat "$T_WORK/a/count")" = "200 none" ] || t_fail "the first 200 handles: $(cat "$T_WORK/a/count")"
hold "$T_WORK/b" 100000
b_pid=$HOLD_PID
read -r got err <"$T_WORK/b/count"
[ "$got" = $((cap - 200)) ] && [ "$err" = EMFILE ] ||
  t_fail "a second process of the same user opened $got more handles ($err), not $((cap - 200)) then EMFILE"
# Not counting pipes: libfuse gives each worker thread a splice pipe pair, and how many workers
# a burst of requests starts is not the daemon's to hold steady.
daemon_fds() { find /proc/"$T_DAEMON_PID"/fd -mindepth 1 -lname 'pipe:*' -prune -o -mindepth 1 -print | wc -l; }
fds=$(daemon_fds)

# The user holds all it may: everyone else is unaffected.
[ "$(cat "$mnt/f")" = shared ] || t_fail "root cannot read through the mount"
echo made >"$mnt/by-root" || t_fail "root cannot create through the mount"
[ "$(cat "$store/by-root")" = made ] || t_fail "root's file is not in the store"
out=$("${as[@]}" "$U2" -- cat "$mnt/f" 2>&1) && [ "$out" = shared ] || t_fail "another user cannot open a file: $out"
"${as[@]}" "$U2" -- "$PY" -c '
import os, sys
fds = [os.open(sys.argv[1], os.O_RDONLY) for _ in range(100)]
' "$mnt/f" || t_fail "another user cannot hold 100 handles"
# Nor can it take more through directories.
"${as[@]}" "$U1" -- ls "$mnt" >/dev/null 2>&1 && t_fail "the user opened a directory beyond its budget"

# Its handles go back to it when released.
before=$(daemon_fds)
release "$T_WORK/b" "$b_pid"
# The kernel sends the releases of an exited process's files after it is gone.
fewer() { (($(daemon_fds) <= before - (cap - 200))); }
t_wait_for 30 fewer
hold "$T_WORK/c" 100000
c_pid=$HOLD_PID
read -r got err <"$T_WORK/c/count"
[ "$got" = $((cap - 200)) ] || t_fail "after closing, the user could open $got handles ($err), not $((cap - 200))"
release "$T_WORK/a" "$a_pid"
release "$T_WORK/c" "$c_pid"
t_log_clean "$T_DAEMON_LOG"
t_unmount "$mnt"
echo "ok: a user stopped at $cap handles (EMFILE; daemon at $fds descriptors); root and another user unaffected"
