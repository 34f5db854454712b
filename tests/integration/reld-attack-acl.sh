#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# POSIX ACLs of the store are honoured through the mount. default_permissions alone checks
# only the mode bits, and the daemon looks names up and lists directories as root, so a file
# or directory whose ACL denies a user what its mode grants (user:evil:--- on a 0644 file, a
# 0755 directory, a database) was open to that user through the live view and .snapshot.
# Now: the live view asks the kernel to check ACLs (FUSE_CAP_POSIX_ACL), and a snapshot,
# which keeps no ACL, narrows the mode so that nobody gets more than the ACL gave them.
# Also: an ACL that denies nothing keeps the snapshot's mode; the owner keeps access; a root
# the user may pass but not read is listed to them neither live nor as .snapshot; a 0777
# root whose ACL denies the user writing it does not let them force captures.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v setfacl >/dev/null || t_fail "setfacl (acl) is needed"
t_attacker sfacl
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/d" "$store/open" "$mnt"
echo file-secret >"$store/f" && chmod 644 "$store/f"
echo dir-secret >"$store/d/g" && chmod 644 "$store/d/g" && chmod 755 "$store/d"
echo group-secret >"$store/gf" && chmod 644 "$store/gf"
echo open >"$store/open/o" && chmod 644 "$store/open/o"
sqlite3 "$store/db" 'create table t(x); insert into t values ("db-secret");'
chmod 644 "$store/db"
setfacl -m "u:$user:---" "$store/f" "$store/d" "$store/db" ||
  t_fail "the store's file system takes no ACLs"
setfacl -m "g:$user:---" "$store/gf"
setfacl -m "u:$user:r--" "$store/open/o"      # denies nothing
setfacl -m "u:$user:--x" "$store"              # the root: may be passed, not listed
# Directly, the user is refused everything above.
for p in f d/g gf db; do
  as_user cat "$store/$p" >/dev/null 2>&1 && t_fail "setup: $user reads $p in the store itself"
done
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0

refused() {  # refused WHAT CMD...: CMD must fail, without showing a secret
  local what=$1 out; shift
  out=$("$@" 2>&1) && t_fail "$what: allowed (got: $out)"
  grep -q secret <<<"$out" && t_fail "$what: refused, yet printed: $out"
  return 0
}
for v in "$mnt" "$mnt/.snapshot"; do
  refused "$user reads a 0644 file whose ACL denies them, in $v" as_user cat "$v/f"
  refused "$user lists a 0755 directory whose ACL denies them, in $v" as_user ls "$v/d"
  refused "$user reads a file in that directory, in $v" as_user cat "$v/d/g"
  refused "$user stats a file in that directory, in $v" as_user stat "$v/d/g"
  refused "$user reads a file whose ACL denies their group, in $v" as_user cat "$v/gf"
  refused "$user reads a database whose ACL denies them, in $v" as_user cat "$v/db"
  refused "$user queries a database whose ACL denies them, in $v" \
    as_user sqlite3 -readonly "file:$v/db?immutable=1" 'select * from t'
  [ "$(as_user cat "$v/open/o")" = open ] || t_fail "$user cannot read a file their ACL allows, in $v"
  [ "$(cat "$v/f")" = file-secret ] && [ "$(cat "$v/d/g")" = dir-secret ] ||
    t_fail "root cannot read the files in $v"
done
# Nor the root's names, live or in .snapshot (whose mode is the root's).
refused "$user lists the root whose ACL denies them reading it" as_user ls "$mnt"
refused "$user lists .snapshot of a root whose ACL denies them reading it" as_user ls "$mnt/.snapshot"
[ "$(ls "$mnt/.snapshot" | wc -l)" -gt 0 ] || t_fail "root cannot list .snapshot"
# An ACL that takes nothing away leaves the snapshot's mode as the store's (less the write bits).
[ "$(stat -c %a "$mnt/.snapshot/open/o")" = 444 ] ||
  t_fail "an ACL that denies nothing narrowed the snapshot's mode to $(stat -c %a "$mnt/.snapshot/open/o")"
# The denying ones took every right from the group and other classes of the copies.
for p in f d db; do
  m=$(stat -c %a "$mnt/.snapshot/$p")
  [ "${m:1}" = 00 ] || t_fail "the snapshot of $p is mode $m: the user denied by its ACL still gets rights"
done
# Forcing a capture is for the root's writers, ACL included.
chmod 777 "$store" && setfacl -m "u:$user:r-x" "$store"
out=$(as_user "$STILLCTL" refresh "$mnt" 2>&1) && t_fail "$user forced a capture though the root's ACL denies them writing it: $out"
"$STILLCTL" refresh "$mnt" >/dev/null || t_fail "root cannot force a capture"
t_unmount "$mnt"
echo "PASS: ACLs that deny a user are honoured through the live view and .snapshot"
