#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A user's own FUSE file system mounted with allow_other on a directory of theirs in the store
# (fusermount3 -o allow_other, allowed by user_allow_other in /etc/fuse.conf: the condition
# docs/SECURITY.md's first "not defended" item names) reports whatever owner and mode its
# daemon likes: here a file of the user's bytes (a copy of id) owned by root with mode 04755.
# fusermount3 mounts it nosuid, so the bit means nothing there. Captures do not stop at mount
# points and take each copy's owner and mode from fstat: root's `stillctl snapshot` writes a
# set-user-ID root file of the user's making into DEST, on a file system that honours it, and
# the user runs it as root; the daemon's helper writes the same file into its cache (served
# through `.snapshot`, nosuid, as root 04755: a root uploader's cp -a or rsync -a keeps it).
# The mount is made here as root with fusermount3's options for the user (user_id, nosuid,
# nodev, allow_other), and its daemon, userfuse.py, runs as the user.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLCTL:?}" "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfsu
store=$T_WORK/store snaps=$T_WORK/snaps mnt=$T_WORK/mnt
mkdir -p "$store/u/m" "$snaps" "$mnt"
chmod 755 "$store" "$snaps"
chown "$user:$user" "$store/u" "$store/u/m"
[ "$(findmnt -n -o OPTIONS --target "$snaps" | tr , '\n' | grep -cx nosuid)" = 0 ] ||
  t_fail "setup: $snaps is on a nosuid file system"
T_MOUNTS+=("$store/u/m")
t_bg python3 "$(dirname "${BASH_SOURCE[0]}")/userfuse.py" "$store/u/m" "$(id -u "$user")" \
  "$(id -g "$user")" /usr/bin/id evil >"$T_WORK/fuse.out" 2>"$T_WORK/fuse.err"
fuse_pid=$!
fuse_up() {
  kill -0 "$fuse_pid" 2>/dev/null || t_fail "the user's FUSE daemon exited: $(cat "$T_WORK/fuse.err")"
  grep -q ready "$T_WORK/fuse.out"
}
t_wait_for 20 fuse_up
[ "$(stat -c '%u %a' "$store/u/m/evil")" = "0 4755" ] || t_fail "setup: the user's mount does not show a set-user-ID root file"
[ "$(ps -o user= -p "$fuse_pid")" = "$user" ] || t_fail "setup: the FUSE daemon does not run as the user"
problems=()
# is_suid_root FILE: owned by root with the set-user-ID bit.
is_suid_root() { [ -u "$1" ] && [ "$(stat -c %u "$1")" = 0 ]; }

# Root's stillctl.
"$STILLCTL" snapshot -q "$store" "$snaps/s1" >"$T_WORK/out" 2>&1 || t_fail "root's snapshot failed: $(cat "$T_WORK/out")"
if [ -e "$snaps/s1/u/m/evil" ]; then
  is_suid_root "$snaps/s1/u/m/evil" &&
    problems+=("root's snapshot holds the user's file as set-user-ID root ($(stat -c '%U %A' "$snaps/s1/u/m/evil"))")
  [ "$(as_user "$snaps/s1/u/m/evil" -u 2>/dev/null)" = 0 ] &&
    problems+=("the user ran their file from root's snapshot as root (id -u: 0)")
fi

# The daemon's cache.
t_mount "$store" "$mnt" -o allow_other,auto_unmount
ls "$mnt/.snapshot/u/m" >/dev/null 2>&1 || true
for f in "$T_WORK"/cache.mnt/gen-*/u/m/evil; do
  [ -e "$f" ] && is_suid_root "$f" &&
    problems+=("the daemon's cache holds the user's file as set-user-ID root: ${f#"$T_WORK"/}")
done
t_unmount "$mnt"
umount "$store/u/m" || t_fail "cannot unmount the user's FUSE file system"
wait "$fuse_pid" 2>/dev/null || true
reld_forget "$fuse_pid"

if [ "${#problems[@]}" -gt 0 ]; then
  printf '%s\n' "${problems[@]}" >&2
  t_fail "${#problems[@]} problems: set-ID bits a user's nosuid mount reports are kept in copies"
fi
echo "PASS: no copy is set-user-ID root with a user's bytes"
