#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Soak of the daemon: generation after generation of a store that `torture write`
# keeps changing at full speed (through the mount by default, so that the daemon serves the
# writer, the captures and the uploader at once), with an uploader-like reader.
# Every cycle: `stillctl refresh` (a new generation; "unsettled" is allowed but counted and
# bounded), then the daemon's descriptors (/proc/PID/fd) and RSS (/proc/PID/status VmRSS)
# are sampled and the cache is checked: no staging or work directory, at most the current
# generation plus those pinned by readers. Every RELD_SOAK_EVERY-th cycle the uploader copies
# .snapshot with rsync -a --delete while the next generation is captured, and the copy must
# pass `torture check --strict` and `stillctl verify`.
# At the end: descriptors bounded (pipes apart, see sample(): median of the last tenth of the
# cycles at most 8 above the median of the first tenth; never more than 64 above the least,
# far from any limit), RSS flat
# (median of the last tenth within 10% + 2 MiB of the median of the first tenth after a
# warm-up), only the current generation left once readers are gone, the writer never failed,
# the daemon unmounts cleanly with a clean log.
# env: RELD_SOAK_CYCLES (default 30; scripts/soak.sh runs 1000), RELD_SOAK_EVERY (default 10),
#      RELD_SOAK_WRITER=mount|store (default mount), RELD_SOAK_SUMMARY=FILE (append the figures),
#      RELD_SOAK_SERIES=FILE (per-cycle "descriptors RSS_KiB"), RELD_SOAK_RSS_RULE=off (sanitizers).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}" "${TORTURE:?}"
cycles=${RELD_SOAK_CYCLES:-30} every=${RELD_SOAK_EVERY:-10} wmode=${RELD_SOAK_WRITER:-mount}
store=$T_WORK/store mnt=$T_WORK/mnt cache=$T_WORK/cache.mnt up=$T_WORK/upload
mkdir -p "$mnt" "$up"
"$TORTURE" init "$store" >/dev/null
t_mount "$store" "$mnt" -o auto_unmount,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=20
case $wmode in
  mount) target=$mnt ;;
  store) target=$store ;;
  *) t_fail "RELD_SOAK_WRITER must be mount or store" ;;
esac
t_bg "$TORTURE" write --persist-interval 1000 "$target" >"$T_WORK/writer.out" 2>&1
writer=${T_PIDS[-1]}
persisted() { [ -n "$(sqlite3 -readonly -cmd '.timeout 5000' "$store/chroma.sqlite3" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
t_wait_for 60 persisted

pid=$T_DAEMON_PID
fds=() rss=() gens_max=0 checked=0 unsettled=0 reader= reader_gen=
# Descriptors are counted without pipes: libfuse gives each worker thread a splice pipe (two
# descriptors) for as long as the thread lives, and the pool grows with the peak number of
# requests in flight (up to max_threads, 64): that is checked apart, against the threads.
pipes_max=0 threads_max=0
sample() {
  local l c p t
  # One character per descriptor, p for a pipe, c for anything else (one find, not a readlink
  # per descriptor).
  l=$(find /proc/"$pid"/fd -mindepth 1 -maxdepth 1 \( -lname 'pipe:*' -printf p \) -o -printf c 2>/dev/null) || true
  t=${l//c/} p=${#t} t=${l//p/} c=${#t}
  t=(/proc/"$pid"/task/*)
  fds+=("$c")
  ((p > pipes_max)) && pipes_max=$p
  ((${#t[@]} > threads_max)) && threads_max=${#t[@]}
  ((p <= 2 * ${#t[@]} + 6)) || t_fail "cycle ${#fds[@]}: $p pipe descriptors for ${#t[@]} threads"
  rss+=("$(awk '/^VmRSS:/ { print $2 }' /proc/"$pid"/status)")
}
judge() {  # judge N: the uploader's copy made during cycle N
  wait "$reader" || t_fail "cycle $1: the uploader's rsync failed"
  reader=
  local vrc=0 crc=0
  "$STILLCTL" verify "$up" >"$T_WORK/verify.out" 2>&1 || vrc=$?
  "$TORTURE" check --strict "$up" >"$T_WORK/check.out" 2>&1 || crc=$?
  ((vrc == 0 && crc == 0)) && { checked=$((checked + 1)); return 0; }
  cat "$T_WORK/verify.out" "$T_WORK/check.out" >&2
  # A copy that verifies holds one generation: then the generation itself is torn.
  ((vrc == 0)) && t_fail "cycle $1: the uploaded generation $reader_gen verifies but is not one consistent instant"
  t_fail "cycle $1: the uploaded copy (generation $reader_gen) does not verify (files of two generations?)"
}
t0=$SECONDS
for n in $(seq 1 "$cycles"); do
  kill -0 "$writer" 2>/dev/null || t_fail "the writer died: $(cat "$T_WORK/writer.out")"
  kill -0 "$pid" 2>/dev/null || t_fail "the daemon died at cycle $n"
  if ((n % every == 0)); then
    reader_gen=$(t_status "$mnt" generation)
    # The uploader holds .snapshot open for its whole run: a refresh forced meanwhile (the
    # next line) replaces the generation for everyone else, and a reader that holds nothing
    # would find names below .snapshot in the new one (documented; `stillctl verify` of
    # such a copy fails, the manifest being of the other generation). rsync is the holder
    # itself (exec), and its sender, the process that reads the files, is that process.
    ( exec 3<"$mnt/.snapshot" && exec rsync -a --delete "$mnt/.snapshot/" "$up/" ) 2>"$T_WORK/rsync.err" &
    reader=$!
  fi
  rc=0; "$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || rc=$?
  case $rc in
    0) ;;
    3) unsettled=$((unsettled + 1)) ;;
    *) cat "$T_WORK/refresh.out" >&2; t_fail "cycle $n: refresh failed ($rc)" ;;
  esac
  [ -n "$reader" ] && judge "$n"
  sample
  left=$(find "$cache" -mindepth 1 -maxdepth 1 -name '.*.stillfs-*' -printf '%f ')
  [ -z "$left" ] || t_fail "cycle $n: staging or work directories in the cache: $left"
  g=$(find "$cache" -mindepth 1 -maxdepth 1 -name 'gen-*' | wc -l)
  ((g > gens_max)) && gens_max=$g
  # The current one, one the uploader may still pin, and one the housekeeper is deleting.
  ((g <= 3)) || t_fail "cycle $n: $g generations in the cache: $(reld_gens "$cache")"
done
elapsed=$((SECONDS - t0))
kill -TERM "$writer"; wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/writer.out")"
reld_forget "$writer"
only_current() { [ "$(reld_gens "$cache")" = "gen-$(t_status "$mnt" generation) " ]; }
t_wait_for 30 only_current
((unsettled <= cycles / 10)) || t_fail "$unsettled of $cycles refreshes did not settle"
((checked == cycles / every)) || t_fail "only $checked copies were checked"

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
maxof() { printf '%s\n' "$@" | sort -n | tail -n 1; }
minof() { printf '%s\n' "$@" | sort -n | head -n 1; }
# Windows of a tenth of the cycles, at least one uploader cycle each (a copy holds descriptors
# for the files it has open), compared first against last.
k=$((cycles / 10)); ((k >= every)) || k=$every
warm=$((k < 10 ? k : 10))
r_first=$(median "${rss[@]:warm:k}") r_last=$(median "${rss[@]: -k}")
f_first=$(median "${fds[@]:0:k}") f_last=$(median "${fds[@]: -k}")
fmin=$(minof "${fds[@]}") fmax=$(maxof "${fds[@]}") rmin=$(minof "${rss[@]}") rmax=$(maxof "${rss[@]}")
summary="cycles=$cycles writer=$wmode duration_s=$elapsed unsettled=$unsettled copies_checked=$checked threads_max=$threads_max pipes_max=$pipes_max fd_min=$fmin fd_max=$fmax fd_median_first_tenth=$f_first fd_median_last_tenth=$f_last rss_kib_min=$rmin rss_kib_max=$rmax rss_kib_median_first_tenth=$r_first rss_kib_median_last_tenth=$r_last gens_max=$gens_max generation=$(t_status "$mnt" generation) captures_ok=$(t_status "$mnt" captures_ok) captures_failed=$(t_status "$mnt" captures_failed) deleted=$(t_status "$mnt" generations_deleted)"
t_log "$summary"
[ -n "${RELD_SOAK_SERIES:-}" ] && paste <(printf '%s\n' "${fds[@]}") <(printf '%s\n' "${rss[@]}") >"$RELD_SOAK_SERIES"
[ -n "${RELD_SOAK_SUMMARY:-}" ] && echo "$summary writer_says=\"$(head -n 1 "$T_WORK/writer.out")\"" >>"$RELD_SOAK_SUMMARY"
((f_last <= f_first + 8)) || t_fail "descriptors grew: median $f_first in the first tenth, $f_last in the last"
((fmax <= fmin + 64 && fmax + pipes_max < 512)) || t_fail "the daemon held from $fmin to $fmax descriptors (and $pipes_max pipes)"
((threads_max <= 64 + 4)) || t_fail "the daemon ran $threads_max threads"
# (Under AddressSanitizer its quarantine grows the RSS by design: RELD_SOAK_RSS_RULE=off.)
[ "${RELD_SOAK_RSS_RULE:-on}" = off ] ||
  ((r_last <= r_first + r_first / 10 + 2048)) || t_fail "RSS grew: median $r_first KiB in the first tenth, $r_last KiB in the last"
t_unmount "$mnt"
[ -z "$(reld_gens "$cache")" ] || t_fail "generations left after unmount: $(reld_gens "$cache")"
t_log_clean "$T_DAEMON_LOG" 'capture: no consistent cut|capture failed \(Resource temporarily unavailable\)'
echo "# reld-soak: ok"
