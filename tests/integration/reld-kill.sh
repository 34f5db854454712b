#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The daemon killed with SIGKILL in the middle of a capture:
# A. while the capture waits for a store that never settles (settle_timeout 120 s), and
# B. while the capture helper copies a large file (a part of a generation is in the cache).
# Each time, with the helper stopped (as one stuck in I/O is) while the daemon dies: with
# -o auto_unmount no mount remains, a reader blocked on .snapshot gets an error instead of
# hanging, the capture helper does not outlive the daemon (it stops the engine, which removes
# what it made), and the store is untouched.
# C. The daemon and its helper killed together (what a service manager does to the whole
#    control group): the partial generation stays in the cache; a daemon restarted on the same
#    cache removes every leftover (gen-*, .gen-*.stillfs-tmp.*, .gen-*.stillfs-work.*, a kept/
#    without its kept.time) before serving, serves no generation until one is captured whole,
#    and that one verifies.
# D. A generation directory that appears under the name of the next generation (what a helper
#    of a killed daemon could publish late) must not wedge captures.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt cache=$T_WORK/cache.mnt
mkdir -p "$store/sub" "$mnt"
echo keep >"$store/sub/keep.txt"

capturing() { [ "$(t_status "$mnt" capturing 2>/dev/null)" = yes ]; }
helper_of() { pgrep -P "$1" -f -- '--capture-helper' | head -n 1; }
have_helper() { HELPER=$(helper_of "$T_DAEMON_PID"); [ -n "$HELPER" ]; }
staged() { compgen -G "$cache/.gen-*.stillfs-tmp.*" >/dev/null; }
staged_bytes() { du -sb "$cache" 2>/dev/null | cut -f1; }
unmounted() { ! t_is_stillfs "$mnt"; }
gone() { ! kill -0 "$1" 2>/dev/null; }
leftovers() { find "$cache" -mindepth 1 -maxdepth 1 ! -name .stillfs-cache -printf '%f ' 2>/dev/null; }
no_leftovers() { [ -z "$(leftovers)" ]; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# kill_during LABEL: the daemon is capturing (helper $HELPER); kill -9 it and check the rest.
# The helper is stopped while the daemon dies, as one stuck in I/O would be: the unmount must
# not wait for it (a helper that held a copy of fusermount3's socket kept the mount up).
kill_during() {
  local label=$1 t0
  T_PIDS+=("$HELPER")                      # cleanup kills it if this test fails
  kill -STOP "$HELPER"
  t0=$(date +%s%N)
  kill -9 "$T_DAEMON_PID"
  { wait "$T_DAEMON_PID"; } 2>/dev/null || true
  t_wait_for 10 unmounted
  local t_umount; t_umount=$(ms_since "$t0")
  kill -CONT "$HELPER"
  t_wait_for 10 gone "$reader"
  wait "$reader" 2>/dev/null && t_fail "$label: the blocked reader of .snapshot got a listing from a killed daemon"
  t_wait_for 30 gone "$HELPER"
  reld_forget "$T_DAEMON_PID" "$reader" "$HELPER"
  local t_helper; t_helper=$(ms_since "$t0")
  t_wait_for 10 no_leftovers
  t_log "$label: unmounted after ${t_umount} ms, helper $HELPER gone after ${t_helper} ms, cache left clean by the helper"
  ls "$mnt" >/dev/null || t_fail "$label: the mountpoint is unusable after the daemon died"
}

# --- A: killed while waiting for a store that never holds still ------------------------------
( i=0; while :; do echo "$i" >"$store/busy"; i=$((i + 1)); done ) &
busy=$!; T_PIDS+=("$busy")
t_mount "$store" "$mnt" -o auto_unmount,settle_timeout=120,snapshot_linger=0
ls "$mnt/.snapshot" >/dev/null 2>&1 &
reader=$!; T_PIDS+=("$reader")
t_wait_for 20 capturing
t_wait_for 20 have_helper
t_wait_for 20 staged
kill_during "A (unsettled)"
kill "$busy"; wait "$busy" 2>/dev/null || true
reld_forget "$busy"
rm -f "$store/busy"

# --- B: killed while the helper copies a large file -------------------------------------------
head -c $((640 << 20)) < <(yes "stillfs reld-kill large file") >"$store/large"
sum_large=$(sha256sum <"$store/large")
t_mount "$store" "$mnt" -o auto_unmount,snapshot_linger=0
ls "$mnt/.snapshot" >/dev/null 2>&1 &
reader=$!; T_PIDS+=("$reader")
copying() { staged && (( $(staged_bytes) > (32 << 20) )); }
t_wait_for 30 have_helper
t_wait_for 30 copying
capturing || t_fail "B: the status does not say a capture is running"
kill_during "B (copying)"
[ "$(sha256sum <"$store/large")" = "$sum_large" ] || t_fail "B: the store changed"

# --- C: daemon and helper killed together; restart on the same cache -------------------------
t_mount "$store" "$mnt" -o auto_unmount,snapshot_linger=0
first=$T_DAEMON_PID
ls "$mnt/.snapshot" >/dev/null 2>&1 &
reader=$!; T_PIDS+=("$reader")
t_wait_for 30 have_helper
t_wait_for 30 copying
T_PIDS+=("$HELPER")
kill -9 "$T_DAEMON_PID" "$HELPER"
{ wait "$T_DAEMON_PID"; } 2>/dev/null || true
t_wait_for 10 unmounted
t_wait_for 10 gone "$HELPER"
t_wait_for 10 gone "$reader"
wait "$reader" 2>/dev/null || true
reld_forget "$T_DAEMON_PID" "$reader" "$HELPER"
left=$(leftovers)
[ -n "$left" ] || t_fail "C: nothing partial was left to clean (the kill came too late?)"
t_log "C: left in the cache by the killed pair: $left($(staged_bytes) bytes)"
# Leftovers of every kind a run can leave, including a finished-looking generation directory.
mkdir -p "$cache/gen-3/sub" "$cache/.gen-4.stillfs-tmp.999/sub" "$cache/.gen-4.stillfs-work.999"
echo stale >"$cache/gen-3/sub/keep.txt"
# A generation kept at a shutdown whose time was never written (killed in between).
mkdir -p "$cache/kept/sub" && echo stale >"$cache/kept/sub/keep.txt"
t_mount "$store" "$mnt" -o auto_unmount,snapshot_linger=0
[ "$T_DAEMON_PID" != "$first" ] || t_fail "C: not a new daemon"
no_leftovers || t_fail "C: the restarted daemon kept leftovers: $(leftovers)"
[ "$(t_status "$mnt" generation)" = none ] || t_fail "C: a generation is served before any capture"
[ "$(cat "$mnt/.snapshot/sub/keep.txt")" = keep ] || t_fail "C: .snapshot does not serve the store"
[ "$(t_status "$mnt" generation)" = 1 ] || t_fail "C: expected generation 1, got $(t_status "$mnt" generation)"
[ "$(sha256sum <"$mnt/.snapshot/large")" = "$sum_large" ] || t_fail "C: the served large file is not whole"
"$STILLCTL" verify "$mnt/.snapshot" >"$T_WORK/verify.out" 2>&1 ||
  { cat "$T_WORK/verify.out" >&2; t_fail "C: the first generation after the restart does not verify"; }
[ "$(ls "$cache" | grep -c '^gen-')" = 1 ] || t_fail "C: the cache holds other generations: $(ls -A "$cache")"

# --- D: a stray directory under the next generation's name ------------------------------------
mkdir -p "$cache/gen-2/half"                # as if a killed daemon's helper published late
echo changed >"$store/sub/keep.txt"
rc=0; "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || t_fail "D: refresh failed ($rc) with a stray gen-2 in the cache: $(cat "$T_WORK/refresh.out")"
[ "$(cat "$mnt/.snapshot/sub/keep.txt")" = changed ] || t_fail "D: the new generation does not show the change"
[ ! -e "$mnt/.snapshot/half" ] || t_fail "D: the stray directory's content is served"
"$STILLCTL" verify "$mnt/.snapshot" >"$T_WORK/verify.out" 2>&1 ||
  { cat "$T_WORK/verify.out" >&2; t_fail "D: the generation does not verify"; }
t_unmount "$mnt"
t_cache_kept "$cache"
t_log_clean "$T_DAEMON_LOG" 'removing gen-2 from the cache: not a generation of this daemon'
echo "# reld-kill: ok"
