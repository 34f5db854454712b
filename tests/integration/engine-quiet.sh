#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A quiet store is copied byte-identical, and stillfs leaves it byte-identical with its times.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store
mkdir -p "$store/a/b" "$store/ro"
printf 'plain\n' >"$store/a/one.txt"
head -c 2500000 /dev/urandom >"$store/a/b/blob.bin"
truncate -s 512M "$store/sparse.bin"; printf 'x' | dd of="$store/sparse.bin" bs=1 seek=400000000 conv=notrunc status=none
ln -s a/one.txt "$store/rel-link"; ln -s /etc/passwd "$store/abs-link"
sqlite3 "$store/rb.sqlite3" 'create table t(x); insert into t values (1),(2),(3);'
sqlite3 "$store/wal.sqlite3" 'pragma journal_mode=wal; create table t(x); insert into t values (4);' >/dev/null
chmod 0640 "$store/a/one.txt"; chmod 0555 "$store/ro"; chown 1234:5678 "$store/a/b/blob.bin"
mkfifo "$store/pipe"
snapshot_state() { (cd "$store" && find . -printf '%p %y %m %U %G %s %T@ %C@ %l\n' | sort && find . -type f -exec sha256sum {} + | sort); }
before=$(snapshot_state)
"$STILLCTL" snapshot "$store" "$T_WORK/snap" 2>"$T_WORK/err" || { cat "$T_WORK/err"; t_fail "snapshot failed"; }
grep -q "skipping .*pipe" "$T_WORK/err" || t_fail "fifo was not reported as skipped"
after=$(snapshot_state)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; t_fail "the store changed"; }
rm "$store/pipe"
diff -r --no-dereference "$store" "$T_WORK/snap" -x .stillfs-manifest -x wal.sqlite3 || t_fail "snapshot differs from the store"
# A WAL-mode database becomes self-contained: only its format bytes 18-19 (2,2 -> 1,1) differ.
[ "$(cmp -l "$store/wal.sqlite3" "$T_WORK/snap/wal.sqlite3" | awk '{printf "%s:%s:%s ", $1, $2, $3}')" = "19:2:1 20:2:1 " ] ||
  t_fail "wal.sqlite3 differs beyond its format bytes"
for f in a/one.txt ro a/b/blob.bin; do
  [ "$(stat -c '%a %u %g' "$store/$f")" = "$(stat -c '%a %u %g' "$T_WORK/snap/$f")" ] || t_fail "mode/owner of $f not kept"
done
[ "$(readlink "$T_WORK/snap/abs-link")" = /etc/passwd ] || t_fail "symlink not kept as a link"
blocks=$(stat -c %b "$T_WORK/snap/sparse.bin")
[ "$blocks" -lt 10000 ] || t_fail "sparse file inflated to $blocks blocks"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "verify failed"
if ls -A "$T_WORK" | grep -q stillfs-; then t_fail "leftovers beside the snapshot"; fi
