#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Extended attributes through the mount give a user no more than the store itself does.
# The daemon lists attributes as root, and a local file system lists names of the trusted
# namespace only to a caller with CAP_SYS_ADMIN: through the mount, every user saw them.
# Now, for a user other than root:
# - trusted.* names are not listed (and their values stay unreadable), on the live view;
#   root still lists them; the size reported for the list is that of the list given;
# - a user.* attribute of a 0600 file of root's cannot be read, nor set on root's 0644 file.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfxa
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo data >"$store/f" && chmod 644 "$store/f"
echo secret >"$store/private" && chmod 600 "$store/private"
python3 - "$store" <<'EOF' || t_fail "the store's file system takes no trusted or user xattrs"
import os, sys
os.setxattr(sys.argv[1] + "/f", "trusted.hidden-name", b"v")
os.setxattr(sys.argv[1] + "/f", "user.shown", b"v")
os.setxattr(sys.argv[1] + "/private", "user.secret", b"secret-value")
EOF
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
py=$(command -v python3.11 || command -v python3)
[[ $py == /usr/* ]] || py=/usr/bin/python3   # a pyenv shim under /root is not the user's to run

out=$(as_user "$py" - "$mnt/f" "$store/f" <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for p in sys.argv[1:]:
    names = sorted(os.listxattr(p))
    size = libc.listxattr(p.encode(), None, 0)
    print(p.split("/")[-2], ",".join(names), size == sum(len(n) + 1 for n in names))
EOF
) || t_fail "listing attributes as $user: $out"
live=$(sed -n 1p <<<"$out") direct=$(sed -n 2p <<<"$out")
[ "${live#mnt }" = "${direct#store }" ] ||
  t_fail "$user lists other attributes through the mount than in the store: '$live' vs '$direct'"
grep -q trusted <<<"$live" && t_fail "$user lists trusted.* names through the mount: $live"
[[ $live == *user.shown* ]] || t_fail "$user no longer lists user.* names: $live"
python3 -c 'import os, sys; sys.exit("trusted.hidden-name" not in os.listxattr(sys.argv[1]))' "$mnt/f" ||
  t_fail "root does not list the trusted.* name through the mount"
as_user getfattr -n trusted.hidden-name "$mnt/f" >/dev/null 2>&1 && t_fail "$user read a trusted.* value"
out=$(as_user getfattr -n user.secret "$mnt/private" 2>&1) && t_fail "$user read user.secret of a 0600 file: $out"
as_user setfattr -n user.x -v y "$mnt/f" 2>/dev/null && t_fail "$user set an attribute on root's 0644 file"
t_unmount "$mnt"
echo "PASS: extended attributes through the mount give a user no more than the store does"
