#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The quiet window at the start of a capture counts from the store's last change as its newest
# ctime dates it, plus 2.5 s of doubt (whole-second timestamps, a file server's clock, a write
# that lands long after it stamped the ctime: cut-slowwrite): a store still for 6 s is not
# waited for again with --quiet-ms 3000, and a store written 0.5 s before is waited for until
# at least 3 s after that write.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store
mkdir -p "$store/d"
now() { date +%s.%N; }
# age_at_least FILE SEC: wait until FILE's ctime is SEC seconds old
age_at_least() {
  local c; c=$(stat -c %.9Z "$1")
  while awk -v n="$(now)" -v c="$c" -v s="$2" 'BEGIN{exit !(n - c < s)}'; do sleep 0.05; done
}
# capture: run one capture; print its wall time, the file's age at its start and at its end
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

# Still since 6 s (past the 3 s window and the doubt): no wait.
age_at_least "$store/d/last.bin" 6
read -r took at_start at_end < <(capture)
t_log "written ${at_start} s before: took ${took} s"
awk -v t="$took" 'BEGIN{exit !(t < 2.0)}' ||
  t_fail "a store still for 6 s was waited for ${took} s of a 3 s quiet window: its ctime was not trusted"

# Written 0.5 s before: at least 3 s after the write.
head -c 100000 /dev/urandom >"$store/d/last.bin"
age_at_least "$store/d/last.bin" 0.5
read -r took at_start at_end < <(capture)
t_log "written ${at_start} s before: took ${took} s, ended ${at_end} s after the write"
awk -v t="$at_end" 'BEGIN{exit !(t >= 3.0)}' || t_fail "the quiet window ended ${at_end} s after the last write, before 3 s"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "verify failed"
cmp -s "$store/d/last.bin" "$T_WORK/snap/d/last.bin" || t_fail "the snapshot does not hold the last write"
