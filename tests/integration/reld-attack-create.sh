#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Creating a file through the mount never hands the caller a file it did not create.
# With -o allow_other, a real unprivileged user (made with useradd) who may also write a
# directory of the store directly:
# - looks NAME up through the mount (the kernel then remembers it missing for up to 10 s),
#   plants at NAME in the store a symlink to a root-only file outside the store, and opens
#   NAME with O_CREAT through the mount, 200 tries;
# - the same with an existing 0600 file of root's renamed to NAME (another user's file), 1000
#   tries (the rename wins the window less often).
# Root's files keep owner, mode and contents, and are never opened for the user: the daemon
# creates as the caller with O_EXCL|O_NOFOLLOW and opens an existing name only if it is a
# regular file the caller may open. The caller's own creates still work and are the caller's.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${ATTACK:?}"
t_attacker sfatk
store=$T_WORK/store mnt=$T_WORK/mnt secret=$T_WORK/secret
mkdir -p "$store/d" "$mnt"
chown "$user:$user" "$store/d"
echo root-secret >"$secret" && chmod 600 "$secret"
echo victim >"$store/d/victim" && chmod 600 "$store/d/victim"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600
attrs() { stat -c '%u:%g:%a:%s' "$1"; }
secret_was=$(attrs "$secret") victim_was=$(attrs "$store/d/victim")

out=$(as_user "$ATTACK" create-symlink "$mnt/d" "$store/d" "$secret" 200) || t_fail "attack: $out"
t_log "planted symlink: $out"
[ "$(attrs "$secret")" = "$secret_was" ] && [ "$(cat "$secret")" = root-secret ] ||
  t_fail "create through a planted symlink changed root's file: $(attrs "$secret") (was $secret_was)"
grep -q ' opened=0 ' <<<"$out" || t_fail "the user opened through a planted symlink: $out"

out=$(as_user "$ATTACK" create-existing "$mnt/d" "$store/d" victim 1000) || t_fail "attack: $out"
t_log "existing file of root: $out"
[ "$(attrs "$store/d/victim")" = "$victim_was" ] && [ "$(cat "$store/d/victim")" = victim ] ||
  t_fail "create of an existing name gave root's file away: $(attrs "$store/d/victim") (was $victim_was)"
grep -q ' won=0 ' <<<"$out" || t_fail "the user opened root's existing file: $out"

# The caller's own files: created as the caller, and O_CREAT of an existing one of theirs.
as_user sh -c "echo mine >'$mnt/d/new' && echo more >>'$mnt/d/new'" || t_fail "the user cannot create a file"
[ "$(stat -c %U:%G "$store/d/new")" = "$user:$user" ] || t_fail "the new file belongs to $(stat -c %U:%G "$store/d/new")"
[ "$(cat "$store/d/new")" = "$(printf 'mine\nmore')" ] || t_fail "the new file holds $(cat "$store/d/new")"
t_log "OK"
