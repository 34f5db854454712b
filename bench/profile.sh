#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Profiles behind the missed targets in docs/PERFORMANCE.md (not part of the timed benchmark).
#
#   bench/profile.sh BUILD_DIR [capture|writer|read|meta|sqlite|callgrind ...]
#
# Needs perf, strace, valgrind (Debian: linux-perf, strace, valgrind). Uses the helpers of
# bench/bench.sh (STILLBENCH, PASSTHROUGH_LL as there). Work directory: BENCH_DIR/profile.
set -uo pipefail
BUILD=$(cd "${1:?usage: bench/profile.sh BUILD_DIR [what...]}" && pwd)
shift
WHAT=" ${*:-capture writer read meta sqlite callgrind} "
W=${BENCH_DIR:-/var/tmp/stillfs-bench}/profile
STILLCTL=$BUILD/fs/ctl/stillctl
STILLFS=$BUILD/fs/daemon/stillfs
SB=${STILLBENCH:-$BUILD/bench/stillbench}
[ -x "$SB" ] || SB=$BUILD/bench-manual/stillbench
MOUNTS=()
cleanup() {
	touch "$W/stop" 2>/dev/null
	for m in "${MOUNTS[@]}"; do fusermount3 -u -z "$m" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
rm -rf "$W"; mkdir -p "$W"
want() { [[ "$WHAT" == *" $1 "* ]]; }
hdr() { printf '\n=== %s\n' "$*"; }
# top N symbols of a perf.data, self time, by command and symbol
top() { perf report -i "$1" --no-children --sort "${3:-comm,dso,sym}" 2>/dev/null |
	grep -v '^#' | grep '%' | head -"${2:-15}"; }
total_ms() { perf report -i "$1" --stdio 2>/dev/null | awk '/^# Event count/{printf "%.0f ms of CPU sampled\n", $NF/1e6}'; }

store() {
	local s=$1 i
	mkdir -p "$s"
	"$SB" sqlfill "$s/chroma.sqlite3" $((512 << 20)) >/dev/null
	for i in $(seq 0 49); do
		local d
		d=$s/$(printf 'seg-%02d' "$i"); mkdir -p "$d"
		"$SB" fill "$d/header.bin" 100 --seed $((1000 + i))
		"$SB" fill "$d/data_level0.bin" $(((2500 + 318 * i) << 10)) --seed $((2000 + i))
		"$SB" fill "$d/length.bin" $((40 << 10)) --seed $((3000 + i))
		"$SB" fill "$d/link_lists.bin" $((200 << 10)) --seed $((4000 + i))
	done
	sync; sleep 2.1
}

start_stillfs() {
	mkdir -p "$2"
	"$STILLFS" "$1" "$2" -f -o "cache=$3${4:+,$4}" >>"$W/stillfs.log" 2>&1 &
	SF_PID=$!
	MOUNTS+=("$2")
	for _ in $(seq 100); do
		grep -q '^pid:' "$2/.stillfs-status" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

if want capture || want writer; then
	store "$W/store"
fi

if want capture; then
	hdr "full capture of the 1 GiB store (stillctl snapshot), warm cache: perf, self time"
	find "$W/store" -type f -exec cat {} + >/dev/null
	perf stat -e task-clock,context-switches,cpu-migrations,page-faults -o "$W/stat.txt" \
		perf record -q -F 1999 -o "$W/full.data" -- "$STILLCTL" snapshot "$W/store" "$W/snapA" 2>&1
	total_ms "$W/full.data"; top "$W/full.data" 14
	grep -E 'task-clock|page-faults|context' "$W/stat.txt"
	hdr "the same bytes copied by cp -a: perf, self time"
	perf record -q -F 1999 -o "$W/cp.data" -- cp -a "$W/store" "$W/cpA"
	total_ms "$W/cp.data"; top "$W/cp.data" 8
	rm -rf "$W/cpA"
	hdr "incremental capture after 1% changed: perf, self time"
	"$SB" sqlfill "$W/store/chroma.sqlite3" $((5632 << 10)) --seed 9 >/dev/null
	"$SB" fill "$W/store/seg-00/data_level0.bin" $((2500 << 10)) --seed 1
	"$SB" fill "$W/store/seg-01/data_level0.bin" $((2818 << 10)) --seed 2
	perf record -q -F 1999 -o "$W/inc.data" -- "$STILLCTL" snapshot --previous "$W/snapA" "$W/store" "$W/snapB" 2>&1
	total_ms "$W/inc.data"; top "$W/inc.data" 10
	rm -rf "$W/snapA" "$W/snapB"
fi

if want writer; then
	hdr "rollback writer (synchronous=FULL) while stillctl snapshots every 2 s: whole machine, 6 s"
	"$STILLCTL" snapshot "$W/store" "$W/base" >/dev/null 2>&1
	rm -f "$W/stop"
	( prev=$W/base; i=0
	  while [ ! -e "$W/stop" ]; do
		t0=$(date +%s.%N)
		"$STILLCTL" snapshot --previous "$prev" "$W/store" "$W/l.$i" >>"$W/loop.log" 2>&1 && { rm -rf "$prev"; prev=$W/l.$i; }
		i=$((i + 1))
		el=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
		awk "BEGIN{exit !($el < 2)}" && sleep "$(awk "BEGIN{print 2 - $el}")"
	  done; rm -rf "$prev" ) &
	lp=$!
	perf record -q -a -F 999 -o "$W/writer.data" -- "$SB" sqlw "$W/store/chroma.sqlite3" --seconds 6
	touch "$W/stop"; wait "$lp"
	cat "$W/loop.log"
	total_ms "$W/writer.data"
	echo "-- by command"; top "$W/writer.data" 10 comm
	echo "-- by symbol"; top "$W/writer.data" 16
	hdr "the writer's own time: off-CPU waits (strace -c -f, 4 s, no snapshots then with)"
	strace -c -f -o "$W/st0.txt" "$SB" sqlw "$W/store/chroma.sqlite3" --seconds 4
	head -12 "$W/st0.txt"
fi

if want read; then
	hdr "first sequential read of a 1 GiB .snapshot file (backing copy cached): whole machine"
	mkdir -p "$W/big"; "$SB" fill "$W/big/blob.bin" $((1 << 30))
	start_stillfs "$W/big" "$W/mntb" "$W/cacheb"
	ls "$W/mntb/.snapshot" >/dev/null
	cat "$W"/cacheb/gen-*/blob.bin >/dev/null
	"$SB" read "$W/mntb/.snapshot/blob.bin" evict
	perf record -q -a -F 1999 -o "$W/read.data" -- "$SB" read "$W/mntb/.snapshot/blob.bin" seq
	total_ms "$W/read.data"
	echo "-- by command"; top "$W/read.data" 8 comm
	echo "-- by symbol"; top "$W/read.data" 16
	hdr "FUSE requests for that read (strace -c -f on the daemon)"
	"$SB" read "$W/mntb/.snapshot/blob.bin" evict
	strace -c -f -p "$SF_PID" -o "$W/st.txt" & sp=$!; sleep 0.5
	"$SB" read "$W/mntb/.snapshot/blob.bin" seq
	sleep 0.2; kill -INT "$sp"; wait "$sp" 2>/dev/null
	head -14 "$W/st.txt"
	hdr "16 KiB random reads of that file: FUSE requests (strace -c -f on the daemon)"
	"$SB" read "$W/mntb/.snapshot/blob.bin" evict
	strace -c -f -p "$SF_PID" -o "$W/st.txt" & sp=$!; sleep 0.5
	"$SB" read "$W/mntb/.snapshot/blob.bin" rand --count 16384
	sleep 0.2; kill -INT "$sp"; wait "$sp" 2>/dev/null
	head -14 "$W/st.txt"
	hdr "cold read: page cache dropped (whole machine)"
	sync; echo 3 >/proc/sys/vm/drop_caches
	perf record -q -a -F 999 -o "$W/cold.data" -- "$SB" read "$W/mntb/.snapshot/blob.bin" seq
	echo "-- by command"; top "$W/cold.data" 8 comm
	fusermount3 -u -z "$W/mntb"; rm -rf "$W/big" "$W/cacheb"
fi

if want meta; then
	hdr "stat of 10,000 files through the live view: requests per stat (strace -c -f on the daemon)"
	"$SB" tree "$W/meta" 10000 --size 100
	start_stillfs "$W/meta" "$W/mntm" "$W/cachem"
	"$SB" meta "$W/mntm" 10000 stat
	strace -c -f -p "$SF_PID" -o "$W/st.txt" & sp=$!; sleep 0.5
	"$SB" meta "$W/mntm" 10000 stat
	sleep 0.2; kill -INT "$sp"; wait "$sp" 2>/dev/null
	head -14 "$W/st.txt"
	hdr "the same, perf of the whole machine"
	perf record -q -a -F 1999 -o "$W/meta.data" -- "$SB" meta "$W/mntm" 10000 stat
	echo "-- by command"; top "$W/meta.data" 8 comm
	echo "-- by symbol"; top "$W/meta.data" 16
	hdr "one stat of the same path, 20,000 times: native vs live view"
	"$SB" meta "$W/meta" 20000 statone
	"$SB" meta "$W/mntm" 20000 statone
	strace -c -f -p "$SF_PID" -o "$W/st.txt" & sp=$!; sleep 0.5
	"$SB" meta "$W/mntm" 20000 statone
	sleep 0.2; kill -INT "$sp"; wait "$sp" 2>/dev/null
	echo "-- daemon syscalls for those 20,000 stats"; head -10 "$W/st.txt"
	fusermount3 -u -z "$W/mntm"; rm -rf "$W/meta" "$W/cachem"
fi

if want sqlite; then
	hdr "SQLite rollback writer, synchronous=FULL, through the live view: daemon syscalls (3 s)"
	mkdir -p "$W/live"; "$SB" sqlfill "$W/live/w.db" $((4 << 20)) >/dev/null
	start_stillfs "$W/live" "$W/mntl" "$W/cachel"
	strace -c -f -p "$SF_PID" -o "$W/st.txt" & sp=$!; sleep 0.5
	"$SB" sqlw "$W/mntl/w.db" --seconds 3
	sleep 0.2; kill -INT "$sp"; wait "$sp" 2>/dev/null
	head -16 "$W/st.txt"
	hdr "the writer's syscalls, directly on the store vs through the live view (3 s each)"
	strace -c -f -o "$W/wd.txt" "$SB" sqlw "$W/live/w.db" --seconds 3
	head -10 "$W/wd.txt"
	strace -c -f -o "$W/wf.txt" "$SB" sqlw "$W/mntl/w.db" --seconds 3
	head -10 "$W/wf.txt"
	fusermount3 -u -z "$W/mntl"; rm -rf "$W/live" "$W/cachel"
fi

if want callgrind; then
	# Under valgrind the CPU reports no SHA extensions, so the portable SHA-256 is what gets
	# counted. valgrind 3.19 (Debian 12) does not know openat2 (syscall 437); an engine without
	# a fallback for it cannot run there, and then only cp_file (the copy+digest routine) is
	# profiled, through stillbench cptree.
	hdr "instruction counts of a capture (callgrind, 64 MiB store: 32 MiB database + 16 x 2 MiB)"
	mkdir -p "$W/small/seg"
	"$SB" sqlfill "$W/small/chroma.sqlite3" $((32 << 20)) >/dev/null
	for i in $(seq 0 15); do "$SB" fill "$W/small/seg/f$i.bin" $((2 << 20)) --seed "$i"; done
	sleep 2.1
	if valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$STILLCTL" snapshot \
		"$W/small" "$W/smallsnap" 2>&1 | grep -v -e '^==' -e '^--'; [ -d "$W/smallsnap" ]; then
		echo "-- stillctl snapshot"
	else
		echo "-- stillctl cannot run under valgrind here; cp_file alone (stillbench cptree)"
		valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$SB" cptree "$W/small" "$W/smallcp" 2>&1 | grep -v '^=='
	fi
	callgrind_annotate "$W/cg.out" 2>/dev/null | grep -E 'PROGRAM TOTALS|^ *[0-9,]+ +\(' | head -10
fi
