#!/usr/bin/env bash
# The benchmark in one command: install what is missing, build a release build in
# build-bench/, run every figure against the native filesystem in the same run, print the table.
# Takes about 7 minutes; needs root, /dev/fuse and about 6 GiB free under BENCH_DIR
# (default /var/tmp/stillfs-bench). See bench/bench.sh for the knobs; docs/PERFORMANCE.md
# for a run and what it means.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${STILLFS_BENCH_BUILD:-build-bench}
opts=(-Dbuildtype=release -Dtests=false)
if [ -d "$build" ]; then
	meson setup --reconfigure "$build" "${opts[@]}" >/dev/null
else
	meson setup "$build" "${opts[@]}" >/dev/null
fi
ninja -C "$build" >/dev/null
exec bash bench/bench.sh "$build"
