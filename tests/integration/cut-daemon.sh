#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Class 1 through the daemon: the group-commit writer on STORE while stillfs serves it, and
# `cp -a MOUNTPOINT/.snapshot` as the uploader. Every copy must be one instant and verify; at
# least 80% of them must come from a new generation (a capture that finds no cut leaves the
# previous generation current, which is still one instant).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cut-lib.sh"
: "${STILLFS:?STILLFS must point to the stillfs binary}"
mnt=$T_WORK/mnt
mkdir "$mnt"
cut_start group-commit
cut_negative 1 cp -a
t_mount "$CUT_STORE" "$mnt" -o snapshot_max_age=0,snapshot_linger=1

# The previous copy's generation must stop being pinned, so the next copy gets a fresh one.
unpinned() { [ "$(t_status "$mnt" pinned)" != yes ]; }
fresh=0 torn=0 unverified=0
for ((i = 1; i <= CUT_CAPTURES; i++)); do
  cut_alive
  t_wait_for 30 unpinned
  gen0=$(t_status "$mnt" generation)
  dst=$T_WORK/copy$i
  cp -a "$mnt/.snapshot" "$dst" || t_fail "copy $i: cp -a of .snapshot failed"
  gen=$(t_status "$mnt" generation)
  [ "$gen" = "$gen0" ] || fresh=$((fresh + 1))
  if ! cut_judge "$dst"; then
    torn=$((torn + 1))
    echo "# class 1 (daemon) copy $i, generation $gen: TORN: $(cat "$dst.verdict")" >&2
  fi
  if ! "$STILLCTL" verify "$dst" >"$T_WORK/verify.out" 2>&1; then
    unverified=$((unverified + 1))
    echo "# class 1 (daemon) copy $i: stillctl verify failed: $(head -n 3 "$T_WORK/verify.out" | tr '\n' ' ')" >&2
  fi
  rm -rf "$dst" "$dst.verdict"
done
echo "class 1 (daemon): copies $CUT_CAPTURES, new generations $fresh, torn $torn"
((torn == 0)) || t_fail "class 1 (daemon): $torn of $CUT_CAPTURES copies of .snapshot are torn (above)"
((unverified == 0)) || t_fail "class 1 (daemon): $unverified copies fail stillctl verify"
((fresh * 5 >= CUT_CAPTURES * 4)) ||
  t_fail "class 1 (daemon): only $fresh of $CUT_CAPTURES copies got a new generation (80% needed)"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG" 'no consistent cut'
cut_stop
