#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A user may not take the set-ID bits off a file they neither own nor may write. In the store,
# chown(-1, -1) by such a user on root's set-user-ID or set-group-ID program fails with EPERM
# and the bits stay: clearing them is a change of mode, which only the owner may make. Through
# FUSE with FUSE_HANDLE_KILLPRIV_V2 the kernel drops that change of mode from the request
# before it checks the caller's right to it, and passes on a setattr that changes nothing,
# which the daemon takes as a write's request to clear the bits, as root. Here a user who may
# only read root's programs (4755, 2755, 6755, and 2745 of a group they are not in) does
# chown(-1, -1) and fchown(fd, -1, -1) on them, in the store and through the mount: the modes
# must be the same afterwards. The owner's chown(-1, -1) and a writer's write still clear them,
# as in the store.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfch
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/pub" "$mnt"
chmod 1777 "$store/pub"
py=/usr/bin/python3
chownnop() { "$py" -c 'import os,sys
try:
    if sys.argv[2] == "fd":
        fd = os.open(sys.argv[1], os.O_RDONLY); os.fchown(fd, -1, -1); os.close(fd)
    else:
        os.chown(sys.argv[1], -1, -1)
except PermissionError:
    pass' "$1" "$2"; }
make_file() { head -c 4096 /dev/zero >"$1"; chown "$2" "$1"; chmod "$3" "$1"; }

t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600
bad=0
for how in name fd; do
  for mode in 4755 2755 6755 2745; do
    make_file "$store/pub/s.$how.$mode" root:root "$mode"
    make_file "$store/pub/m.$how.$mode" root:root "$mode"
    as_user bash -c "$(declare -f chownnop); py=$py; chownnop '$store/pub/s.$how.$mode' $how"
    as_user bash -c "$(declare -f chownnop); py=$py; chownnop '$mnt/pub/m.$how.$mode' $how"
    s=$(stat -c %a "$store/pub/s.$how.$mode") m=$(stat -c %a "$store/pub/m.$how.$mode")
    if [ "$s" != "$m" ]; then
      echo "MISMATCH: a reader's chown(-1, -1) ($how) on root's $mode file: in the store -> $s, through the mount -> $m" >&2
      bad=$((bad + 1))
    fi
  done
done
# What must still clear: the owner's chown(-1, -1), and a write by a user who may write.
make_file "$store/pub/own" "$user:$user" 4755
as_user bash -c "$(declare -f chownnop); py=$py; chownnop '$mnt/pub/own' name"
[ "$(stat -c %a "$store/pub/own")" = 755 ] || t_fail "the owner's chown(-1, -1) through the mount left $(stat -c %a "$store/pub/own")"
make_file "$store/pub/w" root:root 4777
as_user sh -c "printf x | dd of='$mnt/pub/w' conv=notrunc status=none" || t_fail "the user's write failed"
[ "$(stat -c %a "$store/pub/w")" = 777 ] || t_fail "a user's write through the mount left $(stat -c %a "$store/pub/w")"
t_unmount "$mnt"
[ "$bad" = 0 ] || t_fail "$bad of 8 set-ID files lost their bits to a user who may not change them"
echo "PASS: a user who may only read root's set-ID programs cannot clear their bits through the mount"
