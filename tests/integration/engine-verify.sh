#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
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
# A copy of a two-file snapshot that lacks the file of the manifest's last entry, its
# manifest cut short at that entry's line (or inside it): nothing listed in what is left is
# wrong, so only a manifest that knows it is incomplete can fail it. Then the two entry
# lines swapped: a manifest that is not as written is refused as well.
mkdir "$T_WORK/two"; echo a >"$T_WORK/two/a.txt"; echo b >"$T_WORK/two/b.txt"
"$STILLCTL" snapshot -q "$T_WORK/two" "$T_WORK/snap2"
mf2=$T_WORK/snap2/.stillfs-manifest
read -r line path < <(awk '$1 == "f" && NF == 9 { n = NR; p = $9 } END { print n, p }' "$mf2")
[ -n "$path" ] && grep -q '^files 2$' "$mf2" || t_fail "no two-file manifest: $(cat "$mf2")"
verify_refuses() { # $1 = what was done to the copy
  local rc=0
  "$STILLCTL" verify "$T_WORK/bad" >"$T_WORK/out" 2>"$T_WORK/err" || rc=$?
  [ "$rc" -eq 1 ] && [ "$(wc -l <"$T_WORK/err")" -eq 1 ] && [ ! -s "$T_WORK/out" ] ||
    { cat "$T_WORK/out" "$T_WORK/err" >&2; t_fail "verify exited $rc on a copy $1"; }
}
for cut in line mid-line; do
  rm -rf "$T_WORK/bad"; cp -a "$T_WORK/snap2" "$T_WORK/bad"; rm "$T_WORK/bad/$path"
  keep=$(head -n $((line - 1)) "$mf2" | wc -c)
  [ "$cut" = line ] || keep=$((keep + 20))
  chmod u+w "$T_WORK/bad/.stillfs-manifest"; truncate -s "$keep" "$T_WORK/bad/.stillfs-manifest"
  verify_refuses "missing $path, its manifest cut at the $cut"
  grep -q "truncated" "$T_WORK/err" || t_fail "the cut is not named: $(cat "$T_WORK/err")"
done
rm -rf "$T_WORK/bad"; cp -a "$T_WORK/snap2" "$T_WORK/bad"; chmod u+w "$T_WORK/bad/.stillfs-manifest"
awk -v n="$line" 'NR == n - 1 { held = $0; next } { print } NR == n { print held }' "$mf2" \
  >"$T_WORK/bad/.stillfs-manifest"
cmp -s "$mf2" "$T_WORK/bad/.stillfs-manifest" && t_fail "the entry lines were not swapped"
verify_refuses "whose manifest has two entry lines swapped"
rm -rf "$T_WORK/bad"; cp -a "$T_WORK/snap2" "$T_WORK/bad"
rm "$T_WORK/bad/.stillfs-manifest"
rc=0; "$STILLCTL" verify "$T_WORK/bad" 2>"$T_WORK/err" >/dev/null || rc=$?
[ "$rc" -eq 1 ] && grep -q "no .stillfs-manifest" "$T_WORK/err" || t_fail "missing manifest not reported"
