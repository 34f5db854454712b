#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# mknod through the mount never changes another file than the one it made.
# With -o allow_other, a real unprivileged user (made with useradd) who may also write a
# directory of the store directly makes NAME through the mount with mknod (a regular file,
# mode 04777) while a second thread replaces NAME in the store, as soon as it is there, by
# - a symlink to a root-only 0600 file outside the store (a chmod by name would follow it);
# - a hard link of a root-owned 0666 file outside the store, on the store's filesystem (a
#   chown by name, which does not follow symlinks, would still reach it);
# 1000 tries each. Root's files keep owner and mode: the daemon makes the node as the caller
# (the kernel sets owner and set-ID bits) and changes nothing by name afterwards. The
# caller's own mknod of a set-user-ID file still gives the caller that file, mode 04777.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${ATTACK:?}"
t_attacker sfatk
store=$T_WORK/store mnt=$T_WORK/mnt secret=$T_WORK/secret shared=$T_WORK/shared
mkdir -p "$store/d" "$mnt"
chown "$user:$user" "$store/d"
echo root-secret >"$secret" && chmod 600 "$secret"
echo shared >"$shared" && chmod 666 "$shared"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600
attrs() { stat -c '%u:%g:%a' "$1"; }
secret_was=$(attrs "$secret") shared_was=$(attrs "$shared")

out=$(as_user "$ATTACK" mknod-symlink "$mnt/d" "$store/d" "$secret" 1000) || t_fail "attack: $out"
t_log "swapped for a symlink: $out"
[ "$(attrs "$secret")" = "$secret_was" ] ||
  t_fail "mknod chmod'ed a symlink's target: $(attrs "$secret") (was $secret_was)"

out=$(as_user "$ATTACK" mknod-hardlink "$mnt/d" "$store/d" "$shared" 1000) || t_fail "attack: $out"
t_log "swapped for a hard link: $out"
[ "$(attrs "$shared")" = "$shared_was" ] ||
  t_fail "mknod changed a hard-linked file: $(attrs "$shared") (was $shared_was)"

# The caller's own set-user-ID file, made by mknod (umask 0).
as_user "$ATTACK" mknod-once "$mnt/d" "$store/d" own 1 || t_fail "the user cannot mknod a regular file"
[ "$(stat -c %U:%G:%a:%F "$store/d/own")" = "$user:$user:4777:regular empty file" ] ||
  t_fail "the user's mknod made $(stat -c %U:%G:%a:%F "$store/d/own")"
t_log "OK"
