#!/usr/bin/env bash
# stillctl verify passes a good snapshot and names what is wrong with a damaged one.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store; mkdir -p "$store/d"
head -c 300000 /dev/urandom >"$store/d/data.bin"; echo keep >"$store/keep.txt"
sqlite3 "$store/db.sqlite3" 'create table t(x); insert into t values (1);'
"$STILLCTL" snapshot -q "$store" "$T_WORK/snap"
check_fails() { # $1 = what must be named
  local out rc=0
  out=$("$STILLCTL" verify "$T_WORK/bad") || rc=$?
  [ "$rc" -eq 1 ] || t_fail "verify exited $rc on a damaged copy ($1)"
  grep -q "$1" <<<"$out" || { echo "$out" >&2; t_fail "verify did not name $1"; }
}
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "fresh snapshot does not verify"
cp -a "$T_WORK/snap" "$T_WORK/bad"
# Flip every bit of one byte: writing a fixed value would leave the file intact whenever the
# random byte already had that value (1 run in 256).
byte=$(od -An -tu1 -j123456 -N1 "$T_WORK/bad/d/data.bin" | tr -d ' ')
printf "\\$(printf '%03o' $((byte ^ 255)))" | dd of="$T_WORK/bad/d/data.bin" bs=1 seek=123456 conv=notrunc status=none
cmp -s "$T_WORK/snap/d/data.bin" "$T_WORK/bad/d/data.bin" && t_fail "the damaged copy still matches"
check_fails "differs d/data.bin"
rm -rf "$T_WORK/bad"; cp -a "$T_WORK/snap" "$T_WORK/bad"; rm "$T_WORK/bad/keep.txt"
check_fails "missing keep.txt"
rm -rf "$T_WORK/bad"; cp -a "$T_WORK/snap" "$T_WORK/bad"; : >"$T_WORK/bad/db.sqlite3-wal"
check_fails "not-self-contained db.sqlite3"
rm -rf "$T_WORK/bad"; cp -a "$T_WORK/snap" "$T_WORK/bad"; echo new >"$T_WORK/bad/stray"
check_fails "extra stray"
rm "$T_WORK/bad/.stillfs-manifest"
rc=0; "$STILLCTL" verify "$T_WORK/bad" 2>"$T_WORK/err" >/dev/null || rc=$?
[ "$rc" -eq 1 ] && grep -q "no .stillfs-manifest" "$T_WORK/err" || t_fail "missing manifest not reported"
