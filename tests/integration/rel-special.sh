#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Fifos, sockets and device nodes in the store are never opened (opening a fifo can block,
# reading /dev/zero never ends, opening some devices has side effects), only skipped with a
# warning naming each; the snapshot and its manifest leave them out. Special files in the
# places of a database's -journal, -wal and -shm must not be opened either, and must not stop
# the database from being captured. stillctl runs under `timeout`, and under strace, whose
# log must show no open of any of them.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
store=$T_WORK/store
mkdir -p "$store/d/e"
mksock() { perl -MSocket -e 'socket(S, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!"; bind(S, sockaddr_un($ARGV[0])) or die "bind: $!"' "$1"; }
special=(SPECIAL-fifo d/SPECIAL-fifo.sqlite3 d/e/SPECIAL-sock SPECIAL-zero SPECIAL-tty d/SPECIAL-loop
         SPECIAL-null.sqlite3 rb.sqlite3-journal wal.sqlite3-shm cold.sqlite3-shm)
mkfifo "$store/SPECIAL-fifo" "$store/d/SPECIAL-fifo.sqlite3"
mksock "$store/d/e/SPECIAL-sock"
mknod "$store/SPECIAL-zero" c 1 5       # reads never end
mknod "$store/SPECIAL-tty" c 5 0        # opening it without a terminal fails or hangs up
mknod "$store/d/SPECIAL-loop" b 7 0
mknod "$store/SPECIAL-null.sqlite3" c 1 3
echo plain >"$store/d/e/plain.txt"
# A rollback database with a fifo for a journal (never hot: not a regular file).
sqlite3 "$store/rb.sqlite3" 'create table t(x); insert into t values (1);'
mkfifo "$store/rb.sqlite3-journal"
# A WAL database whose writer is gone, with a fifo where its -shm was.
wal_db() {  # wal_db PATH: a WAL database with a committed row still in its -wal
  sqlite3 "$1" 'pragma journal_mode=wal; pragma wal_autocheckpoint=0; create table t(x); insert into t values (42);' \
    ".shell cp '$1' '$1.keep'; cp '$1-wal' '$1.keep-wal'" >/dev/null
  mv "$1.keep" "$1"; mv "$1.keep-wal" "$1-wal"; rm -f "$1-shm"
}
wal_db "$store/wal.sqlite3"; mkfifo "$store/wal.sqlite3-shm"
wal_db "$store/cold.sqlite3"; mknod "$store/cold.sqlite3-shm" c 1 5
[ -s "$store/wal.sqlite3-wal" ] || t_fail "setup: no WAL content"

trace=()
if command -v strace >/dev/null; then trace=(strace -f -qq -e trace=open,openat,openat2 -o "$T_WORK/trace"); fi
rc=0
# (LeakSanitizer cannot run under ptrace: an ASan build is traced without it.)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
  timeout 60 "${trace[@]}" "$STILLCTL" snapshot "$store" "$T_WORK/snap" 2>"$T_WORK/err" || rc=$?
((rc != 124)) || t_fail "stillctl hung on special files (killed after 60 s)"
((rc == 0)) || { cat "$T_WORK/err" >&2; t_fail "snapshot failed ($rc)"; }
for f in "${special[@]}"; do
  grep -q "skipping .*/$f: not a regular file" "$T_WORK/err" || { cat "$T_WORK/err" >&2; t_fail "no warning for $f"; }
  [ ! -e "$T_WORK/snap/$f" ] && [ ! -L "$T_WORK/snap/$f" ] || t_fail "$f is in the snapshot"
  ! grep -q " ${f//./\\.}\$" "$T_WORK/snap/.stillfs-manifest" || t_fail "$f is in the manifest"
done
if ((${#trace[@]})); then
  opened=$(grep -E 'SPECIAL-|rb\.sqlite3-journal|(wal|cold)\.sqlite3-shm' "$T_WORK/trace" |
           grep -v -- "$T_WORK/\.snap\.stillfs-tmp" | grep -v 'O_PATH' || true)
  [ -z "$opened" ] || { echo "$opened" >&2; t_fail "a special file was opened"; }
else
  t_log "strace not installed: the no-open check was skipped"
fi
for db in wal cold; do
  [ "$(sqlite3 "file:$T_WORK/snap/$db.sqlite3?immutable=1" 'select x from t')" = 42 ] ||
    t_fail "$db.sqlite3 lost its committed row"
done
[ "$(cat "$T_WORK/snap/d/e/plain.txt")" = plain ] || t_fail "plain file not captured"
r_verify "$T_WORK/snap"
echo "# ${#special[@]} special files skipped with a warning, none opened; databases beside special companions captured"
