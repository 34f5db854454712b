#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Symlinks in the store that point outside it (/etc/shadow, a file beside the store, /, ../..,
# a directory outside) are never followed by the daemon:
# - readlink through the live view and .snapshot returns the target text; .snapshot (and the
#   cache) holds the link, not the content;
# - a read through such a link is resolved by the kernel for the caller, as the caller sees
#   the target: root reads the target, nobody gets EACCES on /etc/shadow; a relative link in
#   .snapshot resolves relative to .snapshot, not to the store;
# - operations on the link itself through the mount (touch -h, chown -h, ln, mv, rm, xattrs)
#   act on the link and leave the target untouched;
# - the daemon and its capture helper, traced with strace -f -y while all this happens, never
#   hold a descriptor of anything outside the store, the cache, their own mount (the helper
#   writes mapped pages back through it), /proc, the cgroup's CPU quota and the system's
#   libraries, and every name they open below the store or the cache is opened O_NOFOLLOW
#   (or O_DIRECTORY through openat2 with RESOLVE_NO_SYMLINKS).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
command -v strace >/dev/null || t_fail "strace is needed"
chmod 711 "$T_WORK"
# The store two levels down: its ../.. is no ancestor of the cache (which the engine may open).
store=$T_WORK/x/y/store mnt=$T_WORK/mnt cache=$T_WORK/cache.mnt out=$T_WORK/outside
mkdir -p "$store/d" "$mnt" "$out/dir"
echo outside-secret >"$out/secret" && chmod 600 "$out/secret"
echo outside-file >"$out/dir/f"
echo inside >"$store/d/inside"
ln -s /etc/shadow "$store/shadow"
ln -s "$out/secret" "$store/abs"
ln -s ../outside/secret "$store/rel"          # from the mount: $T_WORK/outside
ln -s ../.. "$store/up"
ln -s / "$store/slash"
ln -s "$out/dir" "$store/dirlink"
ln -s ../../../../../../../../etc/passwd "$store/d/deep"
ln -s inside "$store/d/in"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
as_nobody() { setpriv --reuid nobody --regid nogroup --clear-groups -- "$@"; }
target_state() { stat -c '%i %h %a %u %g %s %Y %Z' "$out/secret" "$out/dir" "$out/dir/f"; sha256sum "$out/secret" "$out/dir/f"; }
before=$(target_state)

# Trace the daemon (all threads, and the helpers it starts) from now on.
reld_trace "$T_DAEMON_PID" "$T_WORK/strace.log"

links="shadow abs rel up slash dirlink d/deep d/in"
cat "$mnt/.snapshot/d/inside" >/dev/null     # capture generation 1 (traced)
for v in "$mnt" "$mnt/.snapshot"; do
  for l in $links; do
    [ "$(stat -c %F "$v/$l")" = "symbolic link" ] || t_fail "$v/$l is not a symlink: $(stat -c %F "$v/$l")"
    [ "$(readlink "$v/$l")" = "$(readlink "$store/$l")" ] || t_fail "readlink $v/$l: $(readlink "$v/$l")"
    ls -l "$v/$l" "$v/$l/" >/dev/null 2>&1 || true
  done
  [ "$(cat "$v/abs")" = outside-secret ] || t_fail "root cannot read through $v/abs (the kernel resolves it for root)"
  out_=$(as_nobody cat "$v/abs" 2>&1) && t_fail "nobody read a 0600 file through $v/abs: $out_"
  out_=$(as_nobody cat "$v/shadow" 2>&1) && t_fail "nobody read /etc/shadow through $v/shadow"
  grep -q 'Permission denied' <<<"$out_" || t_fail "nobody through $v/shadow: $out_"
  [ "$(cat "$v/d/in")" = inside ] || t_fail "$v/d/in does not resolve inside"
  ls "$v/dirlink/" | grep -qx f || t_fail "$v/dirlink does not resolve to the directory as the caller sees it"
  cat "$v/d/deep" >/dev/null || t_fail "$v/d/deep does not resolve"
done
# A relative link resolves from where the caller finds it: from .snapshot, ../outside is
# MNT/outside, which does not exist.
[ "$(cat "$mnt/rel")" = outside-secret ] || t_fail "live rel does not resolve beside the mount"
cat "$mnt/.snapshot/rel" >/dev/null 2>&1 && t_fail ".snapshot/rel resolved outside .snapshot's own tree"
# The generation holds links, not contents.
gen=$(t_status "$mnt" generation)
for l in $links; do
  [ -L "$cache/gen-$gen/$l" ] || t_fail "the cache holds $l as $(stat -c %F "$cache/gen-$gen/$l"), not a link"
done
grep -q '^l .* shadow$' "$mnt/.snapshot/.stillfs-manifest" || t_fail "the manifest does not list shadow as a link"
grep -r -l -e outside-secret -e 'root:' "$cache/gen-$gen" && t_fail "target contents were copied into the cache"

# Operations on the links themselves.
touch -h -d '2001-01-01' "$mnt/abs" || t_fail "touch -h through the mount"
[ "$(stat -c %Y "$store/abs")" = "$(date -d 2001-01-01 +%s)" ] || t_fail "touch -h did not change the link"
chown -h nobody "$mnt/abs" || t_fail "chown -h through the mount"
[ "$(stat -c %U "$store/abs")" = nobody ] || t_fail "chown -h did not change the link"
ln "$mnt/abs" "$mnt/abs-hard" || t_fail "ln of a link through the mount"
[ -L "$store/abs-hard" ] && [ "$(readlink "$store/abs-hard")" = "$out/secret" ] || t_fail "ln made something else than a link to the link"
mv "$mnt/abs-hard" "$mnt/d/abs-moved" || t_fail "mv of a link through the mount"
rm "$mnt/d/abs-moved" || t_fail "rm of a link through the mount"
setfattr -h -n user.x -v 1 "$mnt/abs" 2>/dev/null && t_fail "a user xattr was set on a symlink"
getfattr -h -d "$mnt/abs" >/dev/null 2>&1 || true
# Following the link is the caller's business: nobody may not change root's target.
as_nobody chmod 777 "$mnt/abs" 2>/dev/null && t_fail "nobody chmod'ed a target through a link"
as_nobody touch "$mnt/abs" 2>/dev/null && t_fail "nobody touched a target through a link"
[ "$(target_state)" = "$before" ] || { diff <(echo "$before") <(target_state) >&2; t_fail "a target outside the store changed"; }
"$STILLCTL" refresh "$mnt" >/dev/null || t_fail "refresh (traced) failed"
ls -lR "$mnt/.snapshot/" >/dev/null

# What the daemon and its helpers held and opened.
reld_untrace
[ -s "$T_WORK/strace.log" ] || t_fail "strace recorded nothing: $(cat "$T_WORK/strace.log.err")"
exe=$(readlink -f "$STILLFS")
allowed_ere="^($store|$cache|$mnt|$T_DAEMON_LOG|/proc|/sys/fs/cgroup|/dev/(fuse|null|urandom)|/(usr/)?lib(64|32|x32)?|/etc/ld\.so\.(cache|preload)|/etc/localtime|/usr/share/zoneinfo|$(dirname "$exe"))(/|$)|^(pipe|socket|anon_inode):"
ancestors_ere="^($(p=$cache; a=; while [ "$p" != / ]; do p=$(dirname "$p"); a="$a|$p"; done; echo "${a#|}"))$"
# Every <path> strace shows for a descriptor, i.e. everything the daemon had open.
grep -o '<[^<>]*>' "$T_WORK/strace.log" | sed 's/^<//; s/>$//' | grep -Ev '^(\.\.\. .* resumed|unfinished \.\.\.|detached \.\.\.)$' |
  sort -u >"$T_WORK/paths"
bad=$(grep -Ev -- "$allowed_ere" "$T_WORK/paths" | grep -Ev -- "$ancestors_ere" || true)
[ -z "$bad" ] || { echo "$bad" >&2; t_fail "the daemon or its helper held descriptors outside the store and the cache"; }
# Ancestors of the cache are only ever reached by opening ".." (the engine checks that its
# destination is not inside the store); any other open that ends outside is a followed link.
bad=$(grep -E '(open|openat|openat2)\(.*\) = [0-9]+<[^>]*>$' "$T_WORK/strace.log" | grep -v ', "\.\.", ' |
      sed -E 's/.* = [0-9]+<([^>]*)>$/\1/' | grep -Ev -- "$allowed_ere" || true)
[ -z "$bad" ] || { echo "$bad" >&2; t_fail "the daemon or its helper opened something outside the store and the cache"; }
grep -qx "$store/shadow" "$T_WORK/paths" || t_fail "the trace does not show the links being looked up (strace -y not working?)"
# Names opened relative to a store directory never follow a link. (The cache is private:
# nobody else can put a link there.)
follow=$(grep -E "open(at|at2)?\([0-9]+<$store(/[^>]*)?>, \"[^\"]+\"" "$T_WORK/strace.log" |
         grep -v -e O_NOFOLLOW -e 'RESOLVE_NO_SYMLINKS' -e '"\."' || true)
[ -z "$follow" ] || { echo "$follow" | head >&2; t_fail "the daemon opened a name in the store without O_NOFOLLOW"; }
t_log "traced: $(wc -l <"$T_WORK/strace.log") calls, $(wc -l <"$T_WORK/paths") distinct descriptor paths, none outside"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"
echo "# reld-symlinks: ok"
