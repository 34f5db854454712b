#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A mount inside the store that the daemon cannot enter does not break listings through the
# mount. The store's d/m is covered by a FUSE mount whose daemon is gone (every access gets
# ENOTCONN; a FUSE mount of another user without allow_other gives EACCES the same way).
# `ls -l` of d through the mount (a readdirplus, which looks every entry up) lists every
# name of d, m included, and only m itself reports the error; `.snapshot` still captures the rest of d.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
command -v python3 >/dev/null || t_fail "python3 is needed"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/d/m" "$mnt"
for i in $(seq -w 40); do echo "$i" >"$store/d/f$i"; done
want=$(ls -A "$store/d")

# The dead mount: /dev/fuse is closed as soon as the mount is made.
T_MOUNTS+=("$store/d/m")
python3 - "$store/d/m" <<'PY' || t_fail "cannot make a FUSE mount in the store"
import os, subprocess, sys
fd = os.open("/dev/fuse", os.O_RDWR)
subprocess.check_call(["mount", "-i", "-t", "fuse", "-o",
                       "fd=%d,rootmode=40000,user_id=0,group_id=0" % fd, "dead", sys.argv[1]],
                      pass_fds=[fd])
PY
stat "$store/d/m" >/dev/null 2>&1 && t_fail "the dead mount in the store can be entered"

t_mount "$store" "$mnt" -o auto_unmount
# Readdirplus is used for the first read of a directory; ls -l asks for every entry's attributes.
got=$(ls -A -l "$mnt/d" 2>"$T_WORK/ls.err" | awk 'NR > 1 { print $NF }') || true
[ "$(printf '%s\n' "$got" | sort)" = "$(printf '%s\n' "$want" | sort)" ] ||
  t_fail "ls -l of d through the mount lists $(printf '%s\n' "$got" | wc -l) of its $(printf '%s\n' "$want" | wc -l) entries: $(cat "$T_WORK/ls.err")"
grep -q "cannot access '$mnt/d/m'" "$T_WORK/ls.err" ||
  t_fail "ls -l did not report m alone: $(cat "$T_WORK/ls.err")"
grep -v "'$mnt/d/m'" "$T_WORK/ls.err" | grep -q . && t_fail "ls -l reported more than m: $(cat "$T_WORK/ls.err")"
# The listing without attributes was never affected; it names m too.
[ "$(ls -A "$mnt/d" | sort)" = "$(printf '%s\n' "$want" | sort)" ] || t_fail "ls of d through the mount differs"

# The capture leaves the mount out and takes the rest.
[ "$(ls -A "$mnt/.snapshot/d" | sort)" = "$(printf '%s\n' "$want" | grep -v '^m$' | sort)" ] ||
  t_fail ".snapshot/d holds $(ls -A "$mnt/.snapshot/d" | tr '\n' ' ')"
umount -l "$store/d/m"
t_unmount "$mnt"
echo "ok: a dead mount in the store leaves listings of its directory whole"
