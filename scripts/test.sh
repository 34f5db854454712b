#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install what is missing, build, and run the whole test suite (unit + integration).
# Prints "N passed, N failed" last; exits non-zero if anything failed.
# With arguments, they go to one `meson test` (names, --suite ...) and sanitize.sh does not run.
# Without, the suite runs in four phases, so that work runs side by side only where no test can
# tell (tests/integration/meson.build names the tests that may run beside others and says why
# the others run alone):
#   1. the 'heavy' tests beside each other, and beside them sanitize.sh's builds and its ASan
#      run of those tests;
#   2. every test that may run beside others, one more at a time than there are CPUs, and beside
#      them sanitize.sh's ASan run of such tests (one at a time) and its valgrind runs;
#   3. the tests of suite 'alone', one at a time, with nothing else running;
#   4. sanitize.sh's ASan run of such tests, one at a time, with nothing else running.
# STILLFS_SANITIZE=0 leaves sanitize.sh out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${STILLFS_BUILD:-build}
# -Dwerror=true: this build is also sanitize.sh's gcc -Werror build (SANITIZE_GCC).
if [ -d "$build" ]; then meson setup --reconfigure "$build" -Dwerror=true >/dev/null
else meson setup "$build" -Dwerror=true >/dev/null; fi
ninja -C "$build"
rc=0
log=$(mktemp)
work=$(mktemp -d)
sanitize=0
[ $# -gt 0 ] || [ "${STILLFS_SANITIZE:-1}" = 0 ] || sanitize=1
t0=$SECONDS
phase() { echo "== test.sh: $* ($((SECONDS - t0)) s)"; }
# sanitize_part PART OUT: scripts/sanitize.sh --part=PART, its output to OUT.
sanitize_part() {
  local part=$1 out=$2
  SANITIZE_GCC=$build bash scripts/sanitize.sh --part="$part" >"$out" 2>&1 ||
    echo "Fail: 1 (scripts/sanitize.sh --part=$part)" >>"$out"
}
# run_meson LOGBASE ARGS...: one `meson test` of the build, its output to the console and the log.
run_meson() {
  local logbase=$1; shift
  meson test -C "$build" --no-rebuild --print-errorlogs --logbase "$logbase" "$@" 2>&1 | tee -a "$log" || rc=1
}

if [ $# -gt 0 ]; then
  run_meson testlog "$@"
else
  rm -f "$build"/meson-logs/testlog*
  phase "1/4: tests of suite 'heavy', beside each other"
  if ((sanitize)); then
    { sanitize_part build "$work/sanitize-build"; sanitize_part heavy "$work/sanitize-heavy"; } &
  fi
  mapfile -t heavy < <(meson test -C "$build" --list --suite heavy 2>/dev/null | sed -n 's/^.* \/ //p')
  pids=()
  for t in "${heavy[@]}"; do
    meson test -C "$build" --no-rebuild --print-errorlogs --logbase "testlog-heavy-$t" "$t" \
      >"$work/heavy-$t" 2>&1 &
    pids+=("$!")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[i]}" || rc=1
    tee -a "$log" <"$work/heavy-${heavy[i]}"
  done
  wait   # sanitize.sh's lane
  if ((sanitize)); then cat "$work/sanitize-build" "$work/sanitize-heavy" | tee -a "$log" >&2; fi

  phase "2/4: tests that may run beside others"
  if ((sanitize)); then SANITIZE_JOBS=1 sanitize_part pool "$work/sanitize-pool" & fi
  # One more at a time than there are CPUs: most of these tests wait (whole seconds, uploads,
  # lingers) more than they compute. STILLFS_POOL_JOBS overrides.
  run_meson testlog-pool --num-processes "${STILLFS_POOL_JOBS:-$(($(nproc) + 1))}" \
    --no-suite alone --no-suite heavy
  wait
  if ((sanitize)); then tee -a "$log" <"$work/sanitize-pool" >&2; fi

  # What the tests before left to write back, and to discard for what they deleted (ext4 with
  # -o discard does it at journal commits): the next fsync waits for it. The tests that run
  # alone start with none of that pending.
  sync
  phase "3/4: tests of suite 'alone', one at a time"
  run_meson testlog-alone --suite alone

  if ((sanitize)); then
    phase "4/4: scripts/sanitize.sh --part=alone"
    sanitize_part alone "$work/sanitize-alone"
    tee -a "$log" <"$work/sanitize-alone" >&2
  fi
  phase "done"
  # One log of every test, as a single `meson test` writes it.
  for ext in json txt; do
    cat "$build"/meson-logs/testlog-*."$ext" >"$build/meson-logs/testlog.$ext" 2>/dev/null || true
  done
fi
# A closing line any CI reads: "N passed, N failed".
awk '/^Ok:/{ok+=$2} /^Fail:/{f+=$2} /^Timeout:/{f+=$2} /^Unexpected Pass:/{f+=$3} /^Skipped:/{s+=$2}
     END{printf "%d passed, %d failed%s\n", ok, f, s ? ", " s " skipped" : ""}' "$log"
grep -q '^Fail: [1-9]' "$log" && rc=1
rm -rf "$log" "$work"
exit "$rc"
