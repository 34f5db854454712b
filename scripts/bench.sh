#!/usr/bin/env bash
# The benchmark in one command (issue 6): install what is missing, build a release build in
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
# bench/meson.build builds the helpers once the top-level meson.build has subdir('bench');
# until then they are built here, by hand, with the same sources.
if [ ! -x "$build/bench/stillbench" ]; then
	out=$build/bench-manual
	mkdir -p "$out"
	# shellcheck disable=SC2046
	cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Iinclude bench/stillbench.c "$build/fs/libstillcore.a" \
		$(pkg-config --cflags --libs sqlite3) -pthread -o "$out/stillbench"
	export STILLBENCH=$out/stillbench
	ex=/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c
	if [ -f "$ex" ]; then
		# shellcheck disable=SC2046
		cc -O2 "$ex" $(pkg-config --cflags --libs fuse3) -pthread -o "$out/passthrough_ll"
		export PASSTHROUGH_LL=$out/passthrough_ll
	fi
fi
exec bash bench/bench.sh "$build"
