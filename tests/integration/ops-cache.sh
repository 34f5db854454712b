#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stillctl cache list / prune and their policy, on caches of real daemons:
# - list shows each cache's store, whether it is there or gone, size, whether a generation is
#   kept, and the running daemon's mountpoint; a directory without the marker is left out;
# - prune never touches a cache a running daemon holds, even with --all;
# - by default it removes only caches whose store is gone; a kept generation whose store
#   exists stays unless --older-than (unused that long) or --all says otherwise;
# - --dry-run removes nothing; what is not a stillfs cache is never removed.
source "$(dirname "$0")/lib.sh"
root=$T_WORK/caches
mkdir -p "$root/not-a-cache" "$T_WORK/a" "$T_WORK/b" "$T_WORK/ma" "$T_WORK/mb"
echo a >"$T_WORK/a/f"; echo b >"$T_WORK/b/f"

# Two daemons with caches under $root; both capture once and keep it at unmount.
mount_one() {
  "$STILLFS" "$T_WORK/$1" "$T_WORK/m$1" -f -o "cache=$root/$1" >>"$T_WORK/daemon.$1.log" 2>&1 &
  T_PIDS+=("$!"); T_MOUNTS+=("$T_WORK/m$1"); eval "pid_$1=$!"
  t_wait_for 20 t_is_stillfs "$T_WORK/m$1"
  ls "$T_WORK/m$1/.snapshot" >/dev/null
}
mount_one a
mount_one b
list() { "$STILLCTL" cache list --root "$root" >"$T_WORK/list" || t_fail "cache list failed"; cat "$T_WORK/list" >&2; }
row() { grep "^$root/$1 " "$T_WORK/list" || t_fail "cache $1 not listed"; }
list
row a | grep -q "$T_WORK/a .* there .* running at $T_WORK/ma\$" || t_fail "cache a in use not listed as such"
grep -q not-a-cache "$T_WORK/list" && t_fail "a directory without a marker is listed"
"$STILLCTL" cache prune --all --root "$root" >"$T_WORK/prune" || t_fail "prune --all failed"
grep -q "kept $root/a: in use" "$T_WORK/prune" || t_fail "prune --all did not say it kept the cache in use"
[ -e "$root/a/.stillfs-cache" ] && [ -e "$root/b/.stillfs-cache" ] || t_fail "prune --all removed a cache in use"
t_is_stillfs "$T_WORK/ma" || t_fail "the mount went away"

t_unmount "$T_WORK/ma" "$pid_a"
t_unmount "$T_WORK/mb" "$pid_b"
t_cache_kept "$root/a"
mv "$T_WORK/b" "$T_WORK/b.moved"             # b's store is gone
list
row a | grep -q " there .* yes  *none\$" || t_fail "cache a after unmount: not there/kept/no daemon"
row b | grep -q " gone " || t_fail "cache b of a moved store is not listed as gone"

"$STILLCTL" cache prune -n --root "$root" >"$T_WORK/prune" || t_fail "prune -n failed"
grep -q "would remove $root/b " "$T_WORK/prune" || t_fail "prune -n does not name cache b"
[ -d "$root/b/kept" ] || t_fail "prune -n removed something"
"$STILLCTL" cache prune --root "$root" >"$T_WORK/prune" || t_fail "prune failed"
cat "$T_WORK/prune" >&2
[ -e "$root/b" ] && t_fail "the cache of a store that is gone was not pruned"
[ -d "$root/a/kept" ] || t_fail "the kept generation of a store that exists was pruned by default"
"$STILLCTL" cache prune --older-than 3600 --root "$root" >/dev/null || t_fail "prune --older-than failed"
[ -d "$root/a/kept" ] || t_fail "prune --older-than 3600 removed a cache used just now"

# Make cache a look unused for two days: --older-than takes it.
old=$(($(date +%s) - 2 * 86400))
echo "$old.000000000" >"$root/a/kept.time"
touch -d "@$old" "$root/a"
"$STILLCTL" cache prune --older-than 86400 --root "$root" >"$T_WORK/prune" || t_fail "prune --older-than failed"
grep -q "removed $root/a " "$T_WORK/prune" || t_fail "prune --older-than did not say it removed cache a"
[ -e "$root/a" ] && t_fail "a cache unused for two days survived prune --older-than 86400"
[ -d "$root/not-a-cache" ] || t_fail "prune removed a directory that is not a cache"

# A cache pruned this way is simply a new one for the next daemon.
mount_one a
t_unmount "$T_WORK/ma" "$pid_a"
t_cache_kept "$root/a"

rc=0; "$STILLCTL" cache prune --older-than x --root "$root" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || t_fail "prune --older-than x is not a usage error"
rc=0; "$STILLCTL" cache list --all --root "$root" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || t_fail "cache list takes a prune option"
echo "ok: cache list and prune"
