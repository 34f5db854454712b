#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install what is missing, build, and run the whole test suite (unit + integration).
# Prints "N passed, N failed" last; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${STILLFS_BUILD:-build}
if [ -d "$build" ]; then meson setup --reconfigure "$build" >/dev/null; else meson setup "$build" >/dev/null; fi
ninja -C "$build"
rc=0
log=$(mktemp)
meson test -C "$build" --print-errorlogs "$@" 2>&1 | tee "$log" || rc=$?
if [ $# -eq 0 ] && [ "${STILLFS_SANITIZE:-1}" != 0 ]; then bash scripts/sanitize.sh || { rc=1; echo "Fail: 1 (scripts/sanitize.sh)" >>"$log"; }; fi
# A closing line any CI reads: "N passed, N failed".
awk '/^Ok:/{ok=$2} /^Fail:/{f+=$2} /^Timeout:/{f+=$2} /^Unexpected Pass:/{f+=$3} /^Skipped:/{s=$2}
     END{printf "%d passed, %d failed%s\n", ok, f, s ? ", " s " skipped" : ""}' "$log"
rm -f "$log"
exit "$rc"
