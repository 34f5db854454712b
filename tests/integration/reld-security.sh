#!/usr/bin/env bash
# Permissions with -o allow_other. stillfs always mounts with
# default_permissions: the kernel checks every access against the owners and modes the daemon
# reports, and the daemon (root) must report nothing more permissive than the store's own.
# As unprivileged users (setpriv: nobody, and daemon as the store's owner):
# - a 0600 file of another user, a 0640 file of another group, a file in a 0700 directory of
#   another user are unreadable through the live view and through .snapshot; the owner reads
#   their own 0600 file through both;
# - a user creates files in a 1777 directory through the mount as themselves, and cannot
#   chmod, chown, remove or overwrite what is not theirs; .snapshot refuses every change;
# - a user without write access to the store's root cannot force captures (stillctl refresh);
# - the manifest at the root of .snapshot (it names every entry and holds a digest of every
#   file, so a short secret's digest gives the secret away) is readable only by the store's
#   owner (and root), like the files it describes.
# The cache: mode 0700 even if it existed with wider permissions; every file in a generation
# has its source's owner and group and no permission bit its source lacks; .snapshot shows
# the source's owner, group and mode minus the write bits.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
command -v setpriv >/dev/null || t_fail "setpriv (util-linux) is needed"
chmod 711 "$T_WORK"                          # the test users must reach the mount
store=$T_WORK/store mnt=$T_WORK/mnt cache=$T_WORK/cache.mnt
mkdir -p "$store/priv" "$store/pub" "$store/grp" "$mnt" "$cache"
chmod 777 "$cache"                           # a cache made too open: the daemon must fix it
as_nobody() { setpriv --reuid nobody --regid nogroup --clear-groups -- "$@"; }
as_owner() { setpriv --reuid daemon --regid daemon --clear-groups -- "$@"; }
echo root-secret >"$store/secret" && chmod 600 "$store/secret"
echo owner-secret >"$store/owner-secret" && chown daemon:daemon "$store/owner-secret" && chmod 600 "$store/owner-secret"
echo group-only >"$store/grp/file" && chown root:daemon "$store/grp/file" && chmod 640 "$store/grp/file"
echo hidden >"$store/priv/inner-name" && chmod 644 "$store/priv/inner-name" && chmod 700 "$store/priv"
echo world >"$store/world" && chmod 644 "$store/world"
printf '#!/bin/sh\necho hi\n' >"$store/suid" && chmod 4755 "$store/suid"
chmod 1777 "$store/pub"
echo roots >"$store/pub/roots" && chmod 644 "$store/pub/roots"
chown daemon:daemon "$store" && chmod 755 "$store"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
grep -q "$mnt fuse.stillfs .*default_permissions.*allow_other" /proc/mounts ||
  t_fail "the mount lacks default_permissions or allow_other: $(grep "$mnt" /proc/mounts)"
[ "$(stat -c %a "$cache")" = 700 ] || t_fail "the cache is mode $(stat -c %a "$cache"), not 0700"

denied() {  # denied WHAT CMD...: CMD must fail with "Permission denied"
  local what=$1 out; shift
  out=$("$@" 2>&1) && t_fail "$what: allowed (got: $out)"
  grep -q 'Permission denied' <<<"$out" || t_fail "$what: refused, but not with EACCES: $out"
}
for v in "$mnt" "$mnt/.snapshot"; do
  denied "nobody reads root's 0600 file in $v" as_nobody cat "$v/secret"
  denied "nobody reads daemon's 0600 file in $v" as_nobody cat "$v/owner-secret"
  denied "nobody reads a 0640 file of group daemon in $v" as_nobody cat "$v/grp/file"
  denied "nobody lists a 0700 directory in $v" as_nobody ls "$v/priv"
  denied "nobody reads a file in a 0700 directory in $v" as_nobody cat "$v/priv/inner-name"
  [ "$(as_owner cat "$v/owner-secret")" = owner-secret ] || t_fail "the owner cannot read their own file in $v"
  [ "$(as_owner cat "$v/grp/file")" = group-only ] || t_fail "a group member cannot read a 0640 file in $v"
  [ "$(as_nobody cat "$v/world")" = world ] || t_fail "nobody cannot read a 0644 file in $v"
done

# Changes through the live view: as the caller, and only what the caller may do.
as_nobody sh -c "echo mine >'$mnt/pub/nobodys'" || t_fail "nobody cannot create a file in a 1777 directory"
[ "$(stat -c %U:%G "$store/pub/nobodys")" = nobody:nogroup ] ||
  t_fail "a file created by nobody through the mount belongs to $(stat -c %U:%G "$store/pub/nobodys")"
as_nobody mkdir "$mnt/pub/nobodys-dir" || t_fail "nobody cannot mkdir in a 1777 directory"
[ "$(stat -c %U:%G "$store/pub/nobodys-dir")" = nobody:nogroup ] || t_fail "nobody's directory belongs to $(stat -c %U:%G "$store/pub/nobodys-dir")"
out=$(as_nobody chmod 666 "$mnt/world" 2>&1) && t_fail "nobody chmod'ed root's file"
out=$(as_nobody chown nobody "$mnt/world" 2>&1) && t_fail "nobody chown'ed root's file"
denied "nobody overwrites root's 0644 file" as_nobody sh -c "echo x >'$mnt/world'"
out=$(as_nobody rm -f "$mnt/pub/roots" 2>&1) && t_fail "nobody removed root's file from a sticky directory"
denied "nobody truncates root's file" as_nobody truncate -s 0 "$mnt/world"
[ "$(cat "$store/world")" = world ] && [ "$(stat -c %a "$store/world")" = 644 ] && [ -e "$store/pub/roots" ] ||
  t_fail "an unprivileged user changed root's files"
out=$(as_nobody sh -c "echo x >'$mnt/.snapshot/pub/x'" 2>&1) && t_fail "nobody wrote into .snapshot"
grep -Eq 'Permission denied|Read-only file system' <<<"$out" || t_fail "writing into .snapshot: $out"
out=$(echo x 2>&1 >"$mnt/.snapshot/world") && t_fail "root wrote into .snapshot"
grep -q 'Read-only file system' <<<"$out" || t_fail "root writing into .snapshot: $out"

# Forcing captures needs write access to the store's root.
gen=$(t_status "$mnt" generation)
out=$(as_nobody "$STILLCTL" refresh "$mnt" 2>&1) && t_fail "nobody forced a capture: $out"
grep -q 'Permission denied' <<<"$out" || t_fail "nobody's refresh: $out"
[ "$(t_status "$mnt" generation)" = "$gen" ] || t_fail "nobody's refresh made a generation"
as_owner "$STILLCTL" refresh "$mnt" >/dev/null || t_fail "the store's owner cannot refresh"

# The manifest: the owner (and root) only.
denied "nobody reads the manifest" as_nobody cat "$mnt/.snapshot/.stillfs-manifest"
as_owner cat "$mnt/.snapshot/.stillfs-manifest" >/dev/null || t_fail "the store's owner cannot read the manifest"
"$STILLCTL" verify "$mnt/.snapshot" >"$T_WORK/verify.out" 2>&1 || { cat "$T_WORK/verify.out" >&2; t_fail "verify as root"; }

# Owners and modes: .snapshot = source minus write bits; cache files never wider than source.
gen=$(t_status "$mnt" generation)
[ -d "$cache/gen-$gen" ] || t_fail "no gen-$gen in the cache"
(cd "$store" && find . -mindepth 1 ! -type l -printf '%P\n') | while read -r p; do
  read -r smode suid sgid < <(stat -c '%a %u %g' "$store/$p")
  read -r vmode vuid vgid < <(stat -c '%a %u %g' "$mnt/.snapshot/$p")
  read -r cmode cuid cgid < <(stat -c '%a %u %g' "$cache/gen-$gen/$p")
  want=$(printf '%o' $((8#$smode & ~8#222)))
  [ "$vmode $vuid $vgid" = "$want $suid $sgid" ] ||
    t_fail ".snapshot/$p: mode/owner $vmode $vuid:$vgid, source $smode $suid:$sgid (expected $want)"
  [ "$cuid:$cgid" = "$suid:$sgid" ] || t_fail "cache $p belongs to $cuid:$cgid, source to $suid:$sgid"
  (( (8#$cmode & ~8#$smode) == 0 )) || t_fail "cache $p is mode $cmode, wider than its source's $smode"
done
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# reld-security: ok"
