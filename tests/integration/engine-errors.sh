#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Bad input gets one clear line, the documented exit code, and nothing half-made.
source "$(dirname "$0")/lib.sh"
expect() { # expect CODE PATTERN -- command...
  local code=$1 pat=$2 rc=0; shift 3
  "$@" >"$T_WORK/out" 2>"$T_WORK/err" || rc=$?
  [ "$rc" -eq "$code" ] || { cat "$T_WORK/err" >&2; t_fail "exit $rc, expected $code: $*"; }
  grep -q -- "$pat" "$T_WORK/err" || { cat "$T_WORK/err" >&2; t_fail "no '$pat' in the error of: $*"; }
}
leftovers() { if ls -A "$1" | grep -q 'stillfs-'; then t_fail "leftovers in $1"; fi; }
mkdir -p "$T_WORK/store/sub" "$T_WORK/out1"
echo data >"$T_WORK/store/sub/f"
expect 1 "No such file" -- "$STILLCTL" snapshot "$T_WORK/nope" "$T_WORK/out1/s"
expect 1 "already exists" -- "$STILLCTL" snapshot "$T_WORK/store" "$T_WORK/out1"
expect 1 "inside the store" -- "$STILLCTL" snapshot "$T_WORK/store" "$T_WORK/store/sub/snap"
expect 2 "needs STORE and DEST" -- "$STILLCTL" snapshot "$T_WORK/store"
expect 2 "bad --settle-timeout" -- "$STILLCTL" snapshot --settle-timeout x "$T_WORK/store" "$T_WORK/o"
leftovers "$T_WORK"; leftovers "$T_WORK/store/sub"

# A file that never stops changing: exit 3 naming it, nothing published.
# (one process rewrites a 4 MiB file in place without pause; a 300 ms quiet window never comes)
t_bg perl -e 'open(my $f, "+>", $ARGV[0]) or die; my $d = "x" x 65536;
  while (1) { seek($f, 0, 0); syswrite($f, $d) for 1 .. 64; }' "$T_WORK/store/sub/busy"
t_wait_for 10 test -s "$T_WORK/store/sub/busy"
expect 3 "sub/busy" -- "$STILLCTL" snapshot --settle-timeout 1 --quiet-ms 300 "$T_WORK/store" "$T_WORK/s3"
[ ! -e "$T_WORK/s3" ] || t_fail "unsettled snapshot was published"
kill "${T_PIDS[@]}"; wait "${T_PIDS[@]}" 2>/dev/null || true; T_PIDS=()
leftovers "$T_WORK"

# A database held by a connection in locking_mode=EXCLUSIVE never lets a reader in: exit 3,
# naming it and saying why, nothing published.
sqlite3 "$T_WORK/store/excl.db" 'CREATE TABLE t(x); INSERT INTO t VALUES (1);'
mkfifo "$T_WORK/excl.in"
exec {excl}<>"$T_WORK/excl.in"   # read-write: opening it does not wait for the reader
# (not t_bg: its jobs read /dev/null; and without the writing end, so that closing it ends them)
sqlite3 "$T_WORK/store/excl.db" <"$T_WORK/excl.in" {excl}>&- & T_PIDS+=("$!")
echo "PRAGMA locking_mode=EXCLUSIVE; INSERT INTO t VALUES (2);" >&$excl
t_wait_for 10 bash -c "! sqlite3 '$T_WORK/store/excl.db' 'SELECT count(*) FROM t' >/dev/null 2>&1"
expect 3 "excl.db stayed write-locked (a connection in locking_mode=EXCLUSIVE" -- \
  "$STILLCTL" snapshot --settle-timeout 3 "$T_WORK/store" "$T_WORK/s3x"
[ ! -e "$T_WORK/s3x" ] || t_fail "a snapshot without the locked database was published"
exec {excl}>&-
wait "${T_PIDS[@]}" 2>/dev/null || true; T_PIDS=()
rm "$T_WORK/store/excl.db" "$T_WORK/excl.in"
leftovers "$T_WORK"

# Disk full: exit 4, nothing left on the small filesystem.
mkdir "$T_WORK/small"; mount -t tmpfs -o size=1m tmpfs "$T_WORK/small"; T_MOUNTS+=("$T_WORK/small")
head -c 3000000 /dev/urandom >"$T_WORK/store/big"
expect 4 "No space left" -- "$STILLCTL" snapshot "$T_WORK/store" "$T_WORK/small/s"
[ -z "$(ls -A "$T_WORK/small")" ] || t_fail "disk-full capture left files behind"
umount "$T_WORK/small"; rm "$T_WORK/store/big"

# An unreadable file, for a user who cannot read it: named, exit 4.
chown -R nobody "$T_WORK/store"; chmod 755 "$T_WORK"
echo secret >"$T_WORK/store/sub/secret"; chmod 600 "$T_WORK/store/sub/secret"; chown root "$T_WORK/store/sub/secret"
mkdir "$T_WORK/userout"; chown nobody "$T_WORK/userout"
expect 4 "sub/secret" -- setpriv --reuid nobody --regid nogroup --clear-groups "$STILLCTL" snapshot "$T_WORK/store" "$T_WORK/userout/s"
leftovers "$T_WORK/userout"; [ ! -e "$T_WORK/userout/s" ] || t_fail "snapshot with an unreadable file was published"
