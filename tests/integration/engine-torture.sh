#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Consecutive snapshots under the torture writer at full speed: every one must pass the
# cross-file checker (strict: self-contained databases) and stillctl verify.
source "$(dirname "$0")/lib.sh"
: "${TORTURE:?}"
N=${ENGINE_TORTURE_SNAPSHOTS:-25}
store=$T_WORK/store
"$TORTURE" init "$store" >/dev/null
t_bg "$TORTURE" write --persist-interval 1000 "$store"
writer=${T_PIDS[-1]}
# Wait until the writer has committed something, not for a fixed time.
persisted() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
t_wait_for 30 persisted

prev=() total=0 max_lock=0 retries=0
for i in $(seq 1 "$N"); do
  snap=$T_WORK/snap$i
  start=$(date +%s.%N)
  "$STILLCTL" snapshot -q "${prev[@]}" "$store" "$snap" || t_fail "snapshot $i failed"
  total=$(echo "$total + $(date +%s.%N) - $start" | bc)
  "$TORTURE" check --strict "$snap" >"$T_WORK/check.out" 2>&1 || { cat "$T_WORK/check.out" >&2; t_fail "snapshot $i is not consistent"; }
  "$STILLCTL" verify "$snap" >"$T_WORK/verify.out" || { cat "$T_WORK/verify.out" >&2; t_fail "snapshot $i does not verify"; }
  lock=$(awk '$1=="lock_max_s"{print $2}' "$snap/.stillfs-manifest")
  max_lock=$(echo "if ($lock > $max_lock) $lock else $max_lock" | bc)
  retries=$((retries + $(awk '$1=="retries"{print $2}' "$snap/.stillfs-manifest")))
  # Incremental on the previous one, as the daemon does; keep two around.
  prev=(--previous "$snap")
  [ "$i" -gt 2 ] && rm -rf "$T_WORK/snap$((i - 2))"
done
kill -TERM "$writer"; wait "$writer" || t_fail "torture writer failed"
T_PIDS=()
# Figures: capture time against cp -a of the same (now quiet) store.
cp_start=$(date +%s.%N); cp -a "$store" "$T_WORK/cpa"; cp_time=$(echo "$(date +%s.%N) - $cp_start" | bc)
full_start=$(date +%s.%N); "$STILLCTL" snapshot -q "$store" "$T_WORK/full"; full_time=$(echo "$(date +%s.%N) - $full_start" | bc)
"$TORTURE" check --strict "$T_WORK/full" >/dev/null || t_fail "quiet full snapshot is not consistent"
echo "# $N snapshots under the writer, all consistent and verified; mean $(echo "scale=4; $total / $N" | bc) s each, $retries retries in all, longest lock hold $(echo "$max_lock * 1000" | bc) ms"
echo "# quiet store: full capture $full_time s vs cp -a $cp_time s"
