#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The cache file system fills up (a small tmpfs as -o cache=): the first generation fits, then
# the store grows beyond what the cache can hold. Every capture from then on fails with ENOSPC:
# - the previous generation stays current and is served whole (a reader holding one of its
#   files keeps reading it; new readers get it too, also after the failure back-off when their
#   opening retries the capture);
# - the error is in the log and in `stillctl status` (last_error, captures_failed), and
#   `stillctl refresh` exits 4 and says why;
# - nothing partial appears under .snapshot or stays in the cache (no staging or work
#   directory, the space of the failed attempt is given back);
# once the cache has room again (the tmpfs is enlarged), the next capture works and holds the
# grown store.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt small=$T_WORK/small
mkdir -p "$store/d" "$mnt" "$small"
mount -t tmpfs -o size=6m,mode=0700 reld-cachefull "$small" || t_fail "cannot mount a tmpfs for the cache"
T_MOUNTS+=("$small")
cache=$small/c
echo one >"$store/d/f"
head -c $((2 << 20)) /dev/urandom >"$store/base"
# max_age 0: every unpinned opening of .snapshot captures; linger 2 s: a path used just now
# keeps its generation, so the reader below can pin generation 1 with a handle.
t_mount "$store" "$mnt" -o "auto_unmount,cache=$cache,snapshot_max_age=0,snapshot_linger=2"

used_kib() { df --output=used -k "$small" | tail -n 1 | tr -d ' '; }
listing() { (cd "$1" && find . -path ./.stillfs-manifest -prune -o -printf '%p %y %s\n' | LC_ALL=C sort); }
# (spare: the last deleted generation, kept for the next capture to recycle; stillfs(1))
leftovers() { find "$cache" -mindepth 1 -maxdepth 1 ! -name .stillfs-cache ! -name 'gen-*' ! -name spare -printf '%f '; }
gens() { find "$cache" -mindepth 1 -maxdepth 1 -name 'gen-*' -printf '%f\n' | sort | tr '\n' ' '; }

# Generation 1 fits.
[ "$(cat "$mnt/.snapshot/d/f")" = one ] || t_fail "generation 1 is not served"
exec 3<"$mnt/.snapshot/base"                 # a reader in the middle of generation 1: a pin
[ "$(t_status "$mnt" generation)" = 1 ] || t_fail "expected generation 1, got $(t_status "$mnt" generation)"
# (cat's own handle is released asynchronously: FUSE sends RELEASE after close returns)
one_handle() { [ "$(t_status "$mnt" handles)" = 1 ]; }
t_wait_for 5 one_handle
id1=$(t_status "$mnt" id)
listing "$mnt/.snapshot" >"$T_WORK/gen1.list"
sum_base=$(sha256sum <"$store/base")
used1=$(used_kib)

# The store grows beyond the cache: 5 MiB more, 2 MiB already used of 6.
head -c $((5 << 20)) /dev/urandom >"$store/grow"
echo two >"$store/d/f"
rc=0; "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || rc=$?
[ "$rc" -eq 4 ] || t_fail "refresh into a full cache: exit $rc, expected 4: $(cat "$T_WORK/refresh.out")"
grep -qi 'no space' "$T_WORK/refresh.out" || t_fail "refresh does not say why: $(cat "$T_WORK/refresh.out")"
rc=0; "$STILLCTL" status "$mnt" >"$T_WORK/status.out" || rc=$?
[ "$rc" = 5 ] || t_fail "stillctl status exited $rc after a failed capture (expected 5: the last capture failed)"
grep -Eqi '^last_error: .*(no space|space left)' "$T_WORK/status.out" ||
  t_fail "stillctl status does not show the error: $(grep last_error "$T_WORK/status.out")"
grep -q '^last_error_at: ' "$T_WORK/status.out" || t_fail "stillctl status does not say when the error happened"
[ "$(t_status "$mnt" captures_failed)" = 1 ] || t_fail "captures_failed is $(t_status "$mnt" captures_failed)"
grep -Eq 'capture failed \(No space left on device\).*still serving the previous generation' "$T_DAEMON_LOG" ||
  { cat "$T_DAEMON_LOG" >&2; t_fail "the log does not report the failed capture"; }

# Generation 1 is still what .snapshot serves, whole, and nothing partial is anywhere.
check_gen1() {  # check_gen1 WHEN
  [ "$(t_status "$mnt" generation)" = 1 ] && [ "$(t_status "$mnt" id)" = "$id1" ] ||
    t_fail "$1: generation 1 was replaced: $(t_status "$mnt" generation) $(t_status "$mnt" id)"
  [ "$(cat "$mnt/.snapshot/d/f")" = one ] || t_fail "$1: .snapshot does not serve generation 1"
  [ -e "$mnt/.snapshot/grow" ] && t_fail "$1: part of the failed capture is served under .snapshot"
  listing "$mnt/.snapshot" | cmp -s - "$T_WORK/gen1.list" ||
    { diff "$T_WORK/gen1.list" <(listing "$mnt/.snapshot") >&2; t_fail "$1: .snapshot is not generation 1 any more"; }
  "$STILLCTL" verify "$mnt/.snapshot" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "$1: generation 1 does not verify"; }
  [ -z "$(leftovers)" ] || t_fail "$1: the failed capture left $(leftovers)in the cache"
  [ "$(gens)" = "gen-1 " ] || t_fail "$1: the cache holds generations $(gens)"
  local used; used=$(used_kib)
  ((used <= used1 + 256)) || t_fail "$1: the failed capture kept its space: ${used} KiB used, ${used1} KiB before"
}
check_gen1 "after the failed refresh"
[ "$(sha256sum <&3)" = "$sum_base" ] || t_fail "the reader of generation 1 read other bytes"
exec 3<&-

# Openers after the back-off retry the capture (max_age 0, unpinned) and still get generation 1.
# (Each opening pins for the linger time; only an unpinned one captures.)
unpinned() { [ "$(t_status "$mnt" pinned)" = no ]; }
retried() {
  unpinned || return 1
  [ "$(cat "$mnt/.snapshot/d/f")" = one ] || t_fail "an opener during the failures did not get generation 1"
  (( $(t_status "$mnt" captures_failed) >= 2 ))
}
t_wait_for 30 retried
check_gen1 "after a failed capture on open"

# Room again: the next capture works and holds the grown store.
mount -o remount,size=32m "$small" || t_fail "cannot enlarge the tmpfs"
sum_grow=$(sha256sum <"$store/grow")
rc=0; "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || t_fail "refresh with room again: exit $rc: $(cat "$T_WORK/refresh.out")"
gen=$(t_status "$mnt" generation)
[ "$gen" = 2 ] || t_fail "expected generation 2 (failed attempts use no number), got $gen"
[ "$(cat "$mnt/.snapshot/d/f")" = two ] || t_fail "the new generation does not hold the change"
[ "$(sha256sum <"$mnt/.snapshot/grow")" = "$sum_grow" ] || t_fail "the new generation's grown file is wrong"
"$STILLCTL" verify "$mnt/.snapshot" >"$T_WORK/verify.out" 2>&1 ||
  { cat "$T_WORK/verify.out" >&2; t_fail "generation 2 does not verify"; }
[ "$(t_status "$mnt" last_error)" != none ] || t_fail "the last error was forgotten"
# (Readers above may have made newer generations: max_age is 0.) The old ones go.
only_current() { [ "$(gens)" = "gen-$(t_status "$mnt" generation) " ]; }
t_wait_for 20 only_current
[ -z "$(leftovers)" ] || t_fail "leftovers in the cache: $(leftovers)"
t_log "failed captures: $(t_status "$mnt" captures_failed); cache used with generation 1: ${used1} KiB, now $(used_kib) KiB"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG" 'capture failed \(No space left on device\)|capture: (no space left|cannot|.*No space left)'
echo "# reld-cachefull: ok"
