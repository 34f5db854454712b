#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Scale and odd names: 50,000 files (100 directories of 500, plus a chain 20 levels deep),
# names with spaces, tabs, newlines, non-UTF-8 bytes, '%', '\', a leading '-', 255 bytes;
# databases deep in the tree; a sparse file of 1 TiB apparent size with four 4 KiB data blocks.
# The capture runs with only 64 descriptors allowed (descriptor use must not grow with the
# tree: both the directories and the files of one directory outnumber them several times over)
# and under GNU time: capture time and peak RSS are printed for docs/RELIABILITY.md.
# The snapshot must equal the store (names, modes, owners, content), the sparse file must stay
# sparse (st_blocks no larger than the source's) and hold its data blocks, and it must verify.
# env: REL_SCALE_DIRS (default 100), REL_SCALE_FILES (per directory, default 500; 1000 for the
# 100,000 files of the figures in docs/RELIABILITY.md),
# REL_SCALE_CPA=1 also times cp -a of the same store, for comparison.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
dirs=${REL_SCALE_DIRS:-100} per=${REL_SCALE_FILES:-500}
store=$T_WORK/store
mkdir "$store"
long=$(printf 'L%.0s' $(seq 255))
odd=("with space" $'tab\there' $'new\nline' $'\xff\xfe-not-utf8' 'per%41cent' 'back\slash' '-dash' "$long" ' lead' 'trail ' '*?[glob]')
t0=$SECONDS
for d in $(seq 0 $((dirs - 1))); do
  mkdir "$store/t$d"
  # one file per line: f000, f001, ... each holding its own number
  seq $((d * per)) $((d * per + per - 1)) | (cd "$store/t$d" && split -l 1 -a 4 -d - f)
done
for n in "${odd[@]}"; do printf 'odd %s\n' "$n" >"$store/t0/$n"; done
mkdir "$store/"$'dir\nwith newline' "$store/"$'\xc3\x28dir'
for n in "${odd[@]:0:8}"; do printf '%s\n' "$n" >"$store/"$'dir\nwith newline'"/$n"; done
deep=$store
for l in $(seq -w 1 20); do
  deep="$deep/level $l"$'\xe9'
  mkdir "$deep"
  for f in $(seq 0 9); do printf 'level %s file %d\n' "$l" "$f" >"$deep/f$f"; done
done
sqlite3 "$deep/deep.sqlite3" 'create table t(x); insert into t values (20);'
mid=t$((dirs / 2))
sqlite3 "$store/$mid/wal.sqlite3" 'pragma journal_mode=wal; create table t(x); insert into t values (50);' >/dev/null
truncate -s 1T "$store/sparse.bin"
offsets=(0 1073741824 549755813888 1099511623680)
for o in "${offsets[@]}"; do
  printf 'data block at %s\n' "$o" | dd of="$store/sparse.bin" bs=4096 seek=$((o / 4096)) conv=notrunc,sync status=none
done
files=$(find "$store" -type f | wc -l)
t_log "store of $files files made in $((SECONDS - t0)) s"
cp_s="not measured (REL_SCALE_CPA=1)"
if [ -n "${REL_SCALE_CPA:-}" ]; then
  cp_start=$(date +%s.%N); cp -a "$store" "$T_WORK/cpa"; cp_s="$(echo "$(date +%s.%N) - $cp_start" | bc) s"; rm -rf "$T_WORK/cpa"
fi

rc=0
(ulimit -n 64; exec /usr/bin/time -v -o "$T_WORK/time.snap" "$STILLCTL" snapshot -q "$store" "$T_WORK/snap") 2>"$T_WORK/err" || rc=$?
((rc == 0)) || { cat "$T_WORK/err" "$T_WORK/time.snap" >&2; t_fail "snapshot of $files files failed ($rc)"; }
(ulimit -n 64; exec /usr/bin/time -v -o "$T_WORK/time.verify" "$STILLCTL" verify "$T_WORK/snap") >"$T_WORK/verify.out" 2>&1 ||
  { cat "$T_WORK/verify.out" >&2; t_fail "verify failed"; }
field() { awk -F': ' -v k="$2" '$1 ~ k {print $2}' "$1"; }

snap=$T_WORK/snap
t_log "compare"; r_same_tree "$store" "$snap" "the snapshot differs from the store" '/sparse\.bin$|\.sqlite3$'
for db in "${deep#"$store"/}/deep.sqlite3" "$mid/wal.sqlite3"; do
  [ "$(sqlite3 "$snap/$db" 'select x from t')" = "$(sqlite3 "$store/$db" 'select x from t')" ] || t_fail "$db differs"
done
[ "$(stat -c %s "$snap/sparse.bin")" = "$(stat -c %s "$store/sparse.bin")" ] || t_fail "sparse.bin size differs"
sb=$(stat -c %b "$store/sparse.bin") db=$(stat -c %b "$snap/sparse.bin")
((db <= sb)) || t_fail "sparse.bin inflated: $db blocks in the snapshot, $sb in the store"
for o in "${offsets[@]}" 4096 300000000000; do
  cmp -s <(dd if="$store/sparse.bin" bs=4096 skip=$((o / 4096)) count=1 status=none) \
         <(dd if="$snap/sparse.bin" bs=4096 skip=$((o / 4096)) count=1 status=none) ||
    t_fail "sparse.bin differs at offset $o"
done
echo "# $files files, 20 levels deep, odd names, 1 TiB sparse file ($sb -> $db blocks of 512 B):" \
     "capture $(field "$T_WORK/time.snap" 'Elapsed') (peak RSS $(field "$T_WORK/time.snap" 'Maximum resident') KiB)," \
     "verify $(field "$T_WORK/time.verify" 'Elapsed') (peak RSS $(field "$T_WORK/time.verify" 'Maximum resident') KiB), 64 descriptors allowed; cp -a: $cp_s"
