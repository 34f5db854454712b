#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Root's `stillctl snapshot STORE DEST` into a directory a user owns (an uploader's, which
# then syncs DEST) builds the snapshot in a directory it makes beside DEST and renames onto
# DEST. It opened that directory by name, following a symlink: the owner of DEST's directory
# could rename it away and put a symlink to a root directory in its place, and root then
# wrote the store's files - the user's chosen content, under the user's chosen names - into
# that directory (/etc/profile.d, say). strace holds stillctl for a moment after it makes the
# directory (a wide race window, not a different one). Now the directory is opened without
# following a symlink and only if it is root's own, writable by nobody else, and empty:
# - the swap makes the snapshot fail, and nothing appears in the root directory;
# - without the swap the same snapshot is made into the user's directory;
# - root deletes nothing the user names or swaps in: an earlier snapshot (which the user may
#   not delete) renamed as what a killed capture leaves behind, or put in place of the
#   directory being built, is left alone.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLCTL:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v strace >/dev/null || t_fail "strace is needed"
t_attacker sfds
store=$T_WORK/store up=$T_WORK/upload target=$T_WORK/rootdir
mkdir -p "$store" "$up" "$target"
chown "$user" "$up" && chmod 755 "$up"
echo 'echo owned' >"$store/planted.sh" && chown "$user" "$store/planted.sh"
chmod 755 "$target"

# The uploader: as soon as the build directory appears, move it aside and plant a symlink.
swapper() {
  local d
  until d=$(compgen -G "$up/.snap.stillfs-tmp.*"); do sleep 0.01; done
  mv "$d" "$up/moved-aside" && ln -s "$target" "$d"
}
export -f swapper
export up target
setpriv --reuid "$user" --regid "$user" --init-groups -- timeout 60 bash -c swapper &
sw=$!
T_PIDS+=("$sw")
# One second after the first mkdir (the build directory) returns.
rc=0
strace -f -qq -o /dev/null -e trace=mkdirat,mkdir -e inject=mkdirat,mkdir:delay_exit=1000000:when=1 \
  "$STILLCTL" snapshot -q "$store" "$up/snap" >"$T_WORK/out" 2>&1 || rc=$?
wait "$sw" || t_fail "the uploader did not get to swap the directory"
reld_forget "$sw"
[ -z "$(ls -A "$target")" ] || t_fail "root wrote the store into $target through the uploader's symlink: $(ls -A "$target")"
[ "$rc" -ne 0 ] || t_fail "the snapshot succeeded into a directory the uploader swapped: $(cat "$T_WORK/out")"
grep -q 'was replaced' "$T_WORK/out" || t_fail "stillctl did not say why: $(cat "$T_WORK/out")"

# The control: no swap, the snapshot is made.
rm -rf "${up:?}"/* "$up"/.snap*
"$STILLCTL" snapshot -q "$store" "$up/snap" || t_fail "a snapshot into the uploader's directory fails"
[ "$(cat "$up/snap/planted.sh")" = 'echo owned' ] || t_fail "the control snapshot lacks the file"

# That snapshot is root's: the uploader may not delete what is in it. Named as what a killed
# capture leaves behind, it must not be deleted by root's next snapshot either...
as_user rm -f "$up/snap/planted.sh" 2>/dev/null && t_fail "setup: the uploader deleted from root's snapshot"
true & dead=$!; wait "$dead"
as_user mv "$up/snap" "$up/.next.stillfs-tmp.$dead" || t_fail "setup: the uploader cannot rename in their directory"
"$STILLCTL" snapshot -q "$store" "$up/next" >"$T_WORK/out2" 2>&1 || t_fail "the next snapshot failed: $(cat "$T_WORK/out2")"
[ -e "$up/.next.stillfs-tmp.$dead/planted.sh" ] ||
  t_fail "root deleted an earlier snapshot the uploader named as a leftover of a killed capture"
# ... nor when the uploader puts it in place of the directory a snapshot is being built in.
old=$up/.next.stillfs-tmp.$dead
swap_in_old() {
  local d
  until d=$(compgen -G "$up/.third.stillfs-tmp.*"); do sleep 0.01; done
  mv "$d" "$up/moved-aside-2" && mv "$old" "$d"
}
export -f swap_in_old
export old
setpriv --reuid "$user" --regid "$user" --init-groups -- timeout 60 bash -c swap_in_old &
sw=$!
T_PIDS+=("$sw")
strace -f -qq -o /dev/null -e trace=mkdirat,mkdir -e inject=mkdirat,mkdir:delay_exit=1000000:when=1 \
  "$STILLCTL" snapshot -q "$store" "$up/third" >"$T_WORK/out3" 2>&1 &&
  t_fail "the snapshot succeeded in a directory the uploader swapped: $(cat "$T_WORK/out3")"
wait "$sw" || t_fail "the uploader did not get to swap the directory in"
reld_forget "$sw"
compgen -G "$up/.third.stillfs-tmp.*/planted.sh" >/dev/null ||
  t_fail "root deleted the earlier snapshot the uploader swapped in for its build directory"
echo "PASS: root's snapshot builds only in a directory of its own"
