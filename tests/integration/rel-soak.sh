#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Soak: generation after generation of a store that `torture write` keeps changing at full
# speed, with an uploader reading the previous generation while the next one is captured.
# Every SOAK_SAMPLE-th generation the uploader's copy (rsync -a, as an upload would be) must
# pass `torture check --strict` and stillctl verify. Across all cycles:
# - memory: every capture is a new process, so nothing can pile up across cycles (leaks
#   within one are valgrind's and ASan's job, scripts/sanitize.sh); its peak RSS follows the
#   data it copies through SQLite (at most SQLite's page cache) and must stay bounded
#   (< SOAK_RSS_MAX_KIB, 64 MiB; sanitizer builds need more);
# - descriptors open in a capture stay flat (sampled from /proc/PID/fd while it runs) and far
#   below any limit, whatever the number of cycles;
# - no staging or work directory is ever left behind, and only the generations still wanted
#   exist (the two newest);
# - the writer never fails.
#
# The capture side is behind four functions:
#   soak_start            set up, print nothing
#   soak_capture N        make generation N and return its exit status; sets SOAK_RSS_KIB
#                         and SOAK_FDS for the stillctl process of this cycle
#   soak_gen N            print the directory an uploader reads generation N from
#   soak_retire N         drop generation N
# SOAK_MODE=engine (the only mode) runs stillctl snapshot --previous; the daemon's soak, with
# the same checks through a mount, is reld-soak.sh.
# env: SOAK_CYCLES (default 20; the documented soak is 1000), SOAK_SAMPLE (default 4).
# Each capture waits for the next whole second before its cut (uploader-safe mtimes), so a
# cycle takes about a second.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
: "${TORTURE:?}"
cycles=${SOAK_CYCLES:-20} sample=${SOAK_SAMPLE:-4} mode=${SOAK_MODE:-engine}
store=$T_WORK/store gens=$T_WORK/gens up=$T_WORK/upload
mkdir -p "$gens" "$up"

exec {tick}<> <(:)   # never written: reading it with a timeout is a sleep without a fork
case $mode in
  engine)
    rss_rule=bounded
    soak_start() { :; }
    soak_gen() { echo "$gens/g$1"; }
    soak_retire() { rm -rf "$gens/g$1"; }
    soak_capture() {
      local n=$1 prev=() pid tpid rc=0 max=0 fds
      [ -d "$gens/g$((n - 1))" ] && prev=(--previous "$gens/g$((n - 1))")
      /usr/bin/time -f '%M' -o "$T_WORK/rss" "$STILLCTL" snapshot -q "${prev[@]}" "$store" "$gens/g$n" 2>"$T_WORK/cap.err" &
      tpid=$!
      # /usr/bin/time's child is the capture; count its descriptors until it exits, every
      # 2 ms (a read that times out: no process started per sample).
      while r_alive "$tpid"; do
        read -r -t 0.002 -u "$tick" _ || true
        pid=${pid:-$(pgrep -P "$tpid" || true)}
        if [ -n "$pid" ]; then
          fds=(/proc/"$pid"/fd/*)
          [ -e "${fds[0]}" ] && ((${#fds[@]} > max)) && max=${#fds[@]}
        fi
      done
      wait "$tpid" || rc=$?
      SOAK_RSS_KIB=$(tail -n 1 "$T_WORK/rss") SOAK_FDS=$max
      return "$rc"
    }
    ;;
  mount)
    t_fail "SOAK_MODE=mount: the daemon's soak is reld-soak.sh" ;;
  *) t_fail "unknown SOAK_MODE $mode" ;;
esac

"$TORTURE" init "$store" >/dev/null
t_bg "$TORTURE" write --persist-interval 1000 "$store" >"$T_WORK/writer.out" 2>&1
writer=${T_PIDS[-1]}
persisted() { [ -n "$(sqlite3 -readonly -cmd '.timeout 5000' "$store/chroma.sqlite3" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
t_wait_for 30 persisted
soak_start

rss=() fds=() checked=0 unsettled=0 reader=
t0=$SECONDS
for n in $(seq 1 "$cycles"); do
  r_alive "$writer" || t_fail "the writer died: $(cat "$T_WORK/writer.out")"
  # The uploader reads the previous generation while this one is captured.
  if ((n > 1 && (n - 1) % sample == 0)); then
    rsync -a --delete "$(soak_gen $((n - 1)))/" "$up/" &
    reader=$!; T_PIDS+=("$reader")
  fi
  rc=0; soak_capture "$n" || rc=$?
  case $rc in
    0) rss+=("$SOAK_RSS_KIB"); fds+=("$SOAK_FDS") ;;
    3) unsettled=$((unsettled + 1)) ;;   # no cut within the settle timeout: allowed, counted
    *) cat "$T_WORK/cap.err" >&2; t_fail "capture $n failed ($rc)" ;;
  esac
  if [ -n "$reader" ]; then
    wait "$reader" || t_fail "the uploader could not copy generation $((n - 1))"
    T_PIDS=("$writer"); reader=
    "$TORTURE" check --strict "$up" >"$T_WORK/check.out" 2>&1 ||
      { cat "$T_WORK/check.out" >&2; t_fail "the upload of generation $((n - 1)) is not consistent"; }
    r_verify "$up"
    checked=$((checked + 1))
  fi
  # Keep the two newest generations, as a daemon would.
  ((n > 2)) && soak_retire $((n - 2))
  left=$(find "$T_WORK" "$gens" -maxdepth 1 -name '.*.stillfs-*' | wc -l)
  ((left == 0)) || t_fail "cycle $n left staging or work directories behind"
done
elapsed=$((SECONDS - t0))
kill -TERM "$writer"; wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/writer.out")"; T_PIDS=()
[ "$(find "$gens" -mindepth 1 -maxdepth 1 | wc -l)" -le 2 ] || t_fail "more than two generations left"
((${#rss[@]} >= cycles / 2)) || t_fail "only ${#rss[@]} of $cycles captures succeeded"

# Flat: the median of the last tenth against the median of the first tenth.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
k=$(( ${#rss[@]} / 10 )); ((k >= 3)) || k=3
first=$(median "${rss[@]:0:k}") last=$(median "${rss[@]: -k}")
rmax=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
case $rss_rule in
  bounded) ((rmax < ${SOAK_RSS_MAX_KIB:-65536})) || t_fail "a capture peaked at $rmax KiB" ;;
esac
fmax=$(printf '%s\n' "${fds[@]}" | sort -n | tail -n 1)
ffirst=$(printf '%s\n' "${fds[@]:0:k}" | sort -n | tail -n 1)
((fmax <= ffirst + 2)) || t_fail "descriptors grew: at most $ffirst in the first cycles, $fmax later"
((fmax < 64)) || t_fail "a capture used $fmax descriptors"
echo "# soak ($mode): $cycles generations in $elapsed s under the writer, $unsettled unsettled;" \
     "$checked uploads checked consistent; peak RSS $first -> $last KiB (median, first/last tenth), max $rmax KiB;" \
     "descriptors at most $fmax; no leftovers; writer: $(head -n 1 "$T_WORK/writer.out")"
