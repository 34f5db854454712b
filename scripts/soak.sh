#!/usr/bin/env bash
# The daemon's long soak, too long for CI: tests/integration/reld-soak.sh with 1,000
# generation cycles (the suite runs 100) while `torture write` writes through the mount, an
# uploader copies .snapshot with rsync every 10th cycle and each copy is checked with
# `torture check --strict` and `stillctl verify`, and the daemon's descriptors and RSS are
# sampled every cycle. Prints one line of figures (docs/RELIABILITY-daemon.md records them).
#
#   sudo bash scripts/soak.sh [BUILD_DIR]        (default BUILD_DIR: build; configured if new)
#
# env: RELD_SOAK_CYCLES (1000), RELD_SOAK_EVERY (10), RELD_SOAK_WRITER (mount|store),
#      RELD_SOAK_SUMMARY (append the figures to this file), RELD_SOAK_SERIES (write the
#      per-cycle "descriptors RSS_KiB" samples to this file).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
[ "$(id -u)" -eq 0 ] || { echo "soak: needs root (it mounts with fusermount3 and tmpfs)" >&2; exit 1; }
[ -f "$build/build.ninja" ] || meson setup "$build" "$root" >/dev/null
ninja -C "$build" >/dev/null
export STILLCTL=$build/fs/ctl/stillctl STILLFS=$build/fs/daemon/stillfs TORTURE=$build/tests/torture/torture
export RELD_SOAK_CYCLES=${RELD_SOAK_CYCLES:-1000} RELD_SOAK_EVERY=${RELD_SOAK_EVERY:-10}
echo "soak: $RELD_SOAK_CYCLES cycles, a copy checked every $RELD_SOAK_EVERY (build: $build)" >&2
exec bash "$root/tests/integration/reld-soak.sh"
