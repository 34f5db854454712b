#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stillctl status, metrics and refresh run as root (probes, upload timers) against a
# mountpoint that is the store itself, owned by an unprivileged user (made with useradd).
# Once the daemon has stopped, that directory is the user's: what they put there as
# .stillfs-status must not be believed or followed. Against the bare directory stillctl
# exits 1 "not a stillfs mountpoint" whatever sits there: a symlink to a root-only file
# (neither printed nor given an xattr by refresh), a forged "healthy" status, a fifo (no
# hang). The same commands work on the live mount before (control).
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${STILLCTL:?}"
t_attacker sfpr
store=$T_WORK/store
mkdir -p "$store"
echo data >"$store/file"
chown -R "$user:$user" "$store"
printf 'last_capture: ok\ngeneration: 9\nage_s: 1\nSECRET-LINE\n' >"$T_WORK/secret"
chmod 600 "$T_WORK/secret"

t_mount "$store" "$store" -o auto_unmount,allow_other,snapshot_max_age=3600
"$STILLCTL" refresh "$store" >/dev/null || t_fail "control: refresh of the mount failed"
"$STILLCTL" status --max-age 600 "$store" >/dev/null || t_fail "control: status of the mount failed"
# Into a file first: under pipefail, grep -q quitting at its match would make a stillctl still
# writing the rest die of SIGPIPE, and fail the test.
"$STILLCTL" metrics "$store" >"$T_WORK/metrics" || t_fail "control: metrics of the mount failed"
grep -q '^stillfs_generation{' "$T_WORK/metrics" || t_fail "control: no metrics"
t_unmount "$store"

probe() {   # probe WHAT CMD...: root's stillctl on the bare store must exit 1, in time
  local what=$1 rc=0; shift
  timeout 20 "$STILLCTL" "$@" >"$T_WORK/out" 2>"$T_WORK/err" || rc=$?
  [ "$rc" = 1 ] || t_fail "$what: stillctl $* exited $rc, not 1: $(cat "$T_WORK/out" "$T_WORK/err")"
  grep -q "not a stillfs mountpoint" "$T_WORK/err" || t_fail "$what: stillctl $* says: $(cat "$T_WORK/err")"
  if grep -q SECRET "$T_WORK/out" "$T_WORK/err"; then t_fail "$what: stillctl $* printed a root-only file"; fi
}
as_user ln -s "$T_WORK/secret" "$store/.stillfs-status"
probe "symlink to a root-only file" status --max-age 600 "$store"
probe "symlink to a root-only file" metrics "$store"
probe "symlink to a root-only file" refresh "$store"
python3 - "$T_WORK/secret" "$store" <<'PY' || t_fail "refresh set an xattr through the user's symlink or on the store"
import os, sys
for p in sys.argv[1:]:
    assert "user.stillfs.refresh" not in os.listxattr(p), p
PY
as_user rm "$store/.stillfs-status"
printf 'last_capture: ok\ngeneration: 9\nage_s: 1\n' | as_user tee "$store/.stillfs-status" >/dev/null
probe "forged status" status --max-age 600 "$store"
as_user rm "$store/.stillfs-status"
as_user mkfifo "$store/.stillfs-status"
probe "fifo" status "$store"
probe "fifo" refresh "$store"
t_log "OK"
