#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The quiet window at the start of a capture counts from the store's last change as its ctime
# dates it, plus a clock tick's doubt (0.2 s) where the file system is local and keeps fractions
# of a second: a store written 2.5 s before a capture with --quiet-ms 3000 is waited for
# 0.7 s, not the whole 3 s again; a store written 0.5 s before is still waited for until 3 s
# after that write.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store
mkdir -p "$store/d"
now() { date +%s.%N; }
# age_at_least FILE SEC: wait until FILE's ctime is SEC seconds old
age_at_least() {
  local c; c=$(stat -c %.9Z "$1")
  while awk -v n="$(now)" -v c="$c" -v s="$2" 'BEGIN{exit !(n - c < s)}'; do sleep 0.05; done
}
# capture: run one capture, print its wall time, the file's age at its start and at its end
capture() {
  local c t0 t1; c=$(stat -c %.9Z "$store/d/last.bin")
  rm -rf "$T_WORK/snap"
  t0=$(now)
  "$STILLCTL" snapshot -q --quiet-ms 3000 --uploads-before 1 "$store" "$T_WORK/snap" ||
    t_fail "snapshot failed"
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v c="$c" 'BEGIN{printf "%.3f %.3f %.3f\n", b - a, a - c, b - c}'
}
head -c 100000 /dev/urandom >"$store/d/first.bin"
head -c 100000 /dev/urandom >"$store/d/last.bin"
[ "$(stat -c %.9Z "$store/d/last.bin" | cut -d. -f2)" != 000000000 ] ||
  { t_log "SKIP: $T_WORK keeps whole-second timestamps"; exit 77; }

# Still since 2.5 s: the window ends 3.2 s after the write.
age_at_least "$store/d/last.bin" 2.5
read -r took at_start at_end < <(capture)
t_log "written ${at_start} s before: took ${took} s, ended ${at_end} s after the write"
awk -v t="$at_end" 'BEGIN{exit !(t >= 3.0)}' || t_fail "the quiet window ended ${at_end} s after the last write, before 3 s"
awk -v t="$took" 'BEGIN{exit !(t < 2.0)}' ||
  t_fail "a store still for 2.5 s was waited for ${took} s of a 3 s quiet window: its ctime was not trusted"

# Written 0.5 s before: still 3 s after the write (the doubt only ever adds).
head -c 100000 /dev/urandom >"$store/d/last.bin"
age_at_least "$store/d/last.bin" 0.5
read -r took at_start at_end < <(capture)
t_log "written ${at_start} s before: took ${took} s, ended ${at_end} s after the write"
awk -v t="$at_end" 'BEGIN{exit !(t >= 3.0)}' || t_fail "the quiet window ended ${at_end} s after the last write, before 3 s"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "verify failed"
cmp -s "$store/d/last.bin" "$T_WORK/snap/d/last.bin" || t_fail "the snapshot does not hold the last write"
