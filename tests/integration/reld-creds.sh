#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Changes through the live view run with the caller's credentials (a root daemon with
# -o allow_other; a real unprivileged user made with useradd, with a supplementary group):
# - new files, directories, symlinks, fifos and hard links are the caller's, with the caller's
#   primary group, or the directory's group below a set-group-ID directory;
# - a supplementary group's write permission on a directory lets the caller create in it;
# - the caller's own chmod, chgrp (to a group of theirs), truncate, utimens, setxattr,
#   removexattr, rename, link, unlink and rmdir work; chown to another user and chgrp to a
#   group the caller is not in are refused by the store's own rules;
# - requests of the user and of root served at the same time each get their own credentials;
# - set-ID bits: the caller keeps set-user-ID on a file of theirs, and set-group-ID on a
#   file made in a set-group-ID directory of a group they are not in is cleared by the kernel.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
command -v setpriv >/dev/null || t_fail "setpriv (util-linux) is needed"
user=sfcrd$$ grp=sfcrg$$ other=sfcro$$
groupadd "$grp" || t_fail "cannot create the group $grp"
t_useradd "$user"
t_useradd "$other"
trap 'rc=$?; groupdel "$grp" 2>/dev/null; (exit $rc); t_cleanup' EXIT
usermod -a -G "$grp" "$user"
chmod 711 "$T_WORK"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/own" "$store/grpdir" "$store/sgid" "$store/othersgid" "$mnt"
chown "$user:$user" "$store/own"
chown "root:$grp" "$store/grpdir" && chmod 775 "$store/grpdir"
chown "root:$grp" "$store/sgid" && chmod 2777 "$store/sgid"
chown "root:$other" "$store/othersgid" && chmod 2777 "$store/othersgid"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600
owner() { stat -c %U:%G "$1"; }
m=$mnt/own s=$store/own

as_user sh -c "umask 022; echo a >'$m/f' && mkdir '$m/dir' && ln -s f '$m/sl' && mkfifo '$m/fifo' && ln '$m/f' '$m/hard'" ||
  t_fail "the user cannot create in their own directory"
for f in f dir sl fifo hard; do
  [ "$(owner "$s/$f")" = "$user:$user" ] || t_fail "$f belongs to $(owner "$s/$f"), not $user:$user"
done
[ "$(stat -c %h "$s/f")" = 2 ] || t_fail "the hard link was not made"
as_user sh -c "echo g >'$mnt/grpdir/g'" || t_fail "a supplementary group's write permission was not honoured"
[ "$(owner "$store/grpdir/g")" = "$user:$user" ] || t_fail "grpdir/g belongs to $(owner "$store/grpdir/g")"
as_user sh -c "echo s >'$mnt/sgid/s' && mkdir '$mnt/sgid/d'" || t_fail "the user cannot create in a 2777 directory"
[ "$(owner "$store/sgid/s")" = "$user:$grp" ] || t_fail "a file in a set-group-ID directory got $(owner "$store/sgid/s")"
[ "$(stat -c %a "$store/sgid/d")" = 2755 ] || t_fail "a directory in a set-group-ID directory is $(stat -c %a "$store/sgid/d")"

# Set-ID bits: the kernel's own rules, as for a local file.
as_user sh -c "umask 0; touch '$m/suid' && chmod 4755 '$m/suid'" || t_fail "the user cannot make a set-user-ID file of theirs"
[ "$(stat -c %a "$s/suid")" = 4755 ] || t_fail "the user's set-user-ID file is $(stat -c %a "$s/suid")"
as_user sh -c "touch '$mnt/othersgid/x' && chmod 2755 '$mnt/othersgid/x'" || true
[ "$(stat -c %a "$store/othersgid/x")" = 755 ] ||
  t_fail "set-group-ID of a group the caller is not in was kept: $(stat -c %a "$store/othersgid/x")"

# The caller's own changes.
as_user chmod 640 "$m/f" && [ "$(stat -c %a "$s/f")" = 640 ] || t_fail "chmod of the user's own file"
as_user chgrp "$grp" "$m/f" && [ "$(owner "$s/f")" = "$user:$grp" ] || t_fail "chgrp to a group of the user's"
as_user truncate -s 3 "$m/f" && [ "$(stat -c %s "$s/f")" = 3 ] || t_fail "truncate of the user's own file"
as_user touch -d 2001-02-03T04:05:06Z "$m/f" && [ "$(stat -c %Y "$s/f")" = 981173106 ] || t_fail "utimens of the user's own file"
as_user setfattr -n user.k -v v "$m/f" && [ "$(getfattr --only-values -n user.k "$s/f" 2>/dev/null)" = v ] || t_fail "setxattr on the user's own file"
as_user setfattr -x user.k "$m/f" && ! getfattr -n user.k "$s/f" 2>/dev/null || t_fail "removexattr on the user's own file"
as_user mv "$m/hard" "$m/moved" && [ -e "$s/moved" ] || t_fail "rename of the user's own file"
as_user rm "$m/moved" "$m/sl" "$m/fifo" && as_user rmdir "$m/dir" || t_fail "unlink or rmdir of the user's own entries"
[ -z "$(ls "$s" | grep -Ev '^(f|suid)$')" ] || t_fail "left in $s: $(ls "$s")"

# Credentials are per thread: the user and root creating at once each get their own files.
mkdir -p "$store/both" && chmod 1777 "$store/both"
as_user sh -c "for i in \$(seq 300); do : >'$mnt/both/u'\$i; done" & upid=$!
for i in $(seq 300); do : >"$mnt/both/r$i"; done
wait "$upid" || t_fail "the user's creates failed"
wrong=$(find "$store/both" \( -name 'u*' ! -user "$user" \) -o \( -name 'r*' ! -user root \) | head -3)
[ -z "$wrong" ] || t_fail "files created at once by the user and root got the other's owner: $wrong"
[ "$(ls "$store/both" | wc -l)" = 600 ] || t_fail "$(ls "$store/both" | wc -l) files made, not 600"

# What the caller may not do is refused by the store itself.
out=$(as_user chown "$other" "$m/f" 2>&1) && t_fail "the user gave a file away: $out"
out=$(as_user chgrp "$other" "$m/f" 2>&1) && t_fail "the user chgrp'ed to a group they are not in: $out"
out=$(as_user setfattr -n trusted.k -v v "$m/f" 2>&1) && t_fail "the user set a trusted.* attribute: $out"
[ "$(owner "$s/f")" = "$user:$grp" ] || t_fail "the user's file now belongs to $(owner "$s/f")"
t_log "OK"
