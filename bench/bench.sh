#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The stillfs benchmark: every figure is a ratio against the native filesystem (or a
# plain tool) measured in the same run, interleaved A, B, A, B..., medians of repetitions.
#
#   bench/bench.sh BUILD_DIR          (as root; scripts/bench.sh sets up and builds first)
#
# Environment:
#   BENCH_DIR      work directory (default /var/tmp/stillfs-bench; about 6 GiB free needed)
#   BENCH_REPS     repetitions of the short measurements (default 5)
#   BENCH_WREPS    repetitions of the timed SQLite writers and cold reads (default 4)
#   BENCH_SECS     seconds per writer run in figures 3-4 (default 5), BENCH_SECS7 in 7 (3)
#   BENCH_NICE=1   figures 3-4 also with stillctl under nice -n 19 ionice -c 3
#   BENCH_SFOPTS   extra stillfs -o options for the daemon of figures 3-4
#   BENCH_FIGURES  which figures to run (default "1 2 3 4 R 5 6 6b 7 8 9 10 H"; R: XFS and
#                  btrfs loop mounts, H: SHA-256 against OpenSSL)
#   BENCH_KEEP=1   keep the work directory (raw.log, table.md, the stores)
#   STILLBENCH, PASSTHROUGH_LL   helper paths (default BUILD_DIR/bench/...)
#
# Prints the table last; BENCH_DIR/table.md and BENCH_DIR/raw.log keep the details.
# The whole script is one compound command, read before it runs: editing this file while a run
# is going on cannot change what that run does.
{
set -uo pipefail

BUILD=${1:?usage: bench/bench.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
W=${BENCH_DIR:-/var/tmp/stillfs-bench}
REPS=${BENCH_REPS:-5}
WREPS=${BENCH_WREPS:-4}
SECS=${BENCH_SECS:-5}
SECS7=${BENCH_SECS7:-3}
FIGS=" ${BENCH_FIGURES:-1 2 3 4 R 5 6 6b 7 8 9 10 H} "
STILLCTL=$BUILD/fs/ctl/stillctl
STILLFS=$BUILD/fs/daemon/stillfs
SB=${STILLBENCH:-$BUILD/bench/stillbench}
PT=${PASSTHROUGH_LL:-$BUILD/bench/passthrough_ll}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (drop_caches, FUSE mounts)"
[ -x "$STILLCTL" ] || die "$STILLCTL not built"
[ -x "$SB" ] || die "$SB not built"
HAVE_SF=0; [ -x "$STILLFS" ] && [ -e /dev/fuse ] && HAVE_SF=1
HAVE_PT=0; [ -x "$PT" ] && [ -e /dev/fuse ] && HAVE_PT=1

# ---- plumbing --------------------------------------------------------------------------------

MOUNTS=()
BGPIDS=()
cleanup() {
	touch "$W/stop" 2>/dev/null
	for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
	for m in "${MOUNTS[@]}"; do fusermount3 -u -z "$m" 2>/dev/null; done
	wait 2>/dev/null
	for m in "$W"/rfs-*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done # loop: detached too
	if [ "${BENCH_KEEP:-0}" != 1 ]; then
		rm -rf "$W/store1" "$W/big" "$W/live" "$W/meta" "$W/rss" "$W/s10" "$W"/cache* \
		       "$W"/snap* "$W"/loop.* "$W"/cp* "$W"/rw* "$W"/proto* "$W"/mnt* "$W"/rfs-*
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -d "$W" ]; then
	for m in "$W"/mnt*; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"; done
	rm -rf "$W"
fi
mkdir -p "$W" || die "cannot create $W"
RAW=$W/raw.log
# Nothing this run captures is ever uploaded: every snapshot may say so (stillctl
# --uploads-before) to measure a capture without the whole-second wait of the mtime rule.
BENCH_T0=$(date +%s)
TABLE=$W/table.tsv
NOTES=$W/notes.txt
: >"$RAW"; : >"$TABLE"; : >"$NOTES"

log() { echo "bench: $*" >&2; echo "== $*" >>"$RAW"; }
note() { echo "$*" >>"$NOTES"; echo "note: $*" >>"$RAW"; }
now() { date +%s.%N; }
# median of the numbers on stdin ("nan" if none)
med() { sort -g | awk '{a[NR]=$1} END{if(!NR){print "nan";exit} if(NR%2)print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
maxof() { sort -g | tail -1; }
# kv KEY: the value of KEY=... in the line(s) on stdin (the last one)
kv() { grep -o "$1=[^ ]*" | tail -1 | cut -d= -f2; }
calc() { awk "BEGIN{x=($1); if (x != x) print \"nan\"; else printf \"%.${2:-2}f\", x}"; }
isnum() { [[ "$1" =~ ^[0-9.]+$ ]]; }
# pass/miss: cmp VALUE OP TARGET
verdict() { isnum "$1" || { echo "n/a"; return; }; awk "BEGIN{print ($1 $2 $3) ? \"pass\" : \"miss\"}"; }
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$TABLE"; }

# timed CMD...: run it, print its elapsed seconds; its output and rusage go to raw.log
timed() {
	local f=$W/.timed
	rm -f "$f"
	echo "\$ $*" >>"$RAW"
	"$SB" run "$f" -- "$@" >>"$RAW" 2>&1
	local rc=$?
	cat "$f" >>"$RAW"
	[ "$rc" -eq 0 ] || { echo "fail"; return 1; }
	kv elapsed <"$f"
}
# sb ARGS: run stillbench, its key=value line on stdout and in raw.log
sb() {
	local out rc
	out=$("$SB" "$@" 2>>"$RAW"); rc=$?
	echo "sb $* -> $out" >>"$RAW"
	[ -z "$out" ] || echo "$out"
	return $rc
}
# cpu_s: user+sys seconds of the last timed command
cpu_s() { awk '{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="user"||a[1]=="sys")t+=a[2]}} END{print t+0}' "$W/.timed"; }
dropc() { sync; echo 3 >/proc/sys/vm/drop_caches; }
warm() { find "$@" -type f -exec cat {} + >/dev/null 2>&1; }
ctl_copied() { grep -o '[0-9.]* [KMGT]*i*B copied' | tail -1 | sed 's/ copied//'; }

# start_stillfs STORE MNT CACHE [OPTS]: mount in the foreground mode, remember it; sets SF_PID
start_stillfs() {
	local store=$1 mnt=$2 cache=$3 opts=${4:-}
	mkdir -p "$mnt"
	"$STILLFS" "$store" "$mnt" -f -o "cache=$cache${opts:+,$opts}" >>"$W/stillfs.log" 2>&1 &
	SF_PID=$!
	MOUNTS+=("$mnt")
	for _ in $(seq 100); do
		[ -r "$mnt/.stillfs-status" ] && grep -q '^pid:' "$mnt/.stillfs-status" 2>/dev/null && return 0
		kill -0 "$SF_PID" 2>/dev/null || break
		sleep 0.05
	done
	echo "bench: stillfs did not come up on $mnt (see $W/stillfs.log)" >&2
	return 1
}
# start_pt SRC MNT: libfuse's passthrough_ll with its defaults; sets PT_PID
start_pt() {
	mkdir -p "$2"
	"$PT" -f -o "source=$1" "$2" >>"$W/passthrough_ll.log" 2>&1 &
	PT_PID=$!
	MOUNTS+=("$2")
	for _ in $(seq 100); do
		mountpoint -q "$2" && return 0
		kill -0 "$PT_PID" 2>/dev/null || break
		sleep 0.05
	done
	echo "bench: passthrough_ll did not come up on $2" >&2
	return 1
}
stop_mount() {
	fusermount3 -u -z "$1" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.05; done
	kill "$2" 2>/dev/null
}

# ---- the machine -----------------------------------------------------------------------------

machine() {
	local cpu fsdev
	cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
	fsdev=$(df -P "$W" | awk 'NR==2{print $1}')
	echo "cpu: $cpu, $(nproc) cores visible ($(grep -c processor /proc/cpuinfo) online)," \
	     "flags: $(grep -m1 -o -w 'sha_ni\|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"
	echo "memory: $(free -m | awk '/Mem:/{print $2}') MiB; kernel $(uname -r)"
	echo "work dir: $W on $fsdev ($(findmnt -n -o FSTYPE -T "$W"), $(findmnt -n -o OPTIONS -T "$W"))"
	echo "software: $(dpkg-query -W -f='libfuse3 ${Version}' libfuse3-3 2>/dev/null)," \
	     "sqlite $(sqlite3 --version 2>/dev/null | cut -d' ' -f1), $(cp --version | head -1)," \
	     "cc $(cc -dumpversion)"
	echo "dirty limits: vm.dirty_ratio=$(sysctl -n vm.dirty_ratio)" \
	     "vm.dirty_background_ratio=$(sysctl -n vm.dirty_background_ratio)"
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" \
	     "(other engineers' tests share the machine)"
}

# ---- stores ----------------------------------------------------------------------------------

# The 1 GiB store: a 513 MiB SQLite database and 50 segment folders of 4 files (ChromaDB's
# layout), 514 MiB of incompressible data. data_level0.bin grows from 2.4 to 17.7 MiB.
make_store1() {
	local s=$1 i
	mkdir -p "$s"
	sb sqlfill "$s/chroma.sqlite3" $((512 << 20)) --seed 1 >/dev/null || return 1
	for i in $(seq 0 49); do
		local d
		d=$s/$(printf 'seg-%02d' "$i")
		mkdir -p "$d"
		"$SB" fill "$d/header.bin" 100 --seed $((1000 + i)) &&
		"$SB" fill "$d/data_level0.bin" $(((2500 + 318 * i) << 10)) --seed $((2000 + i)) &&
		"$SB" fill "$d/length.bin" $((40 << 10)) --seed $((3000 + i)) &&
		"$SB" fill "$d/link_lists.bin" $((200 << 10)) --seed $((4000 + i)) || return 1
	done
}

# A store between two of its application's writes: still for longer than the capture's quiet
# window (400 ms) and the 2.5 s by which it allows a ctime to fall short of the write it
# dates. A capture that starts sooner first waits out the rest of that window (a figure-2 note
# measures one started right after the change).
still() { sleep 3.2; }

# 1% of the store changes: rows appended to the database, two segment files rewritten in place.
mutate_store1() {
	local s=$1 seed=$2
	sb sqlfill "$s/chroma.sqlite3" $((5632 << 10)) --seed "$seed" >/dev/null
	"$SB" fill "$s/seg-00/data_level0.bin" $((2500 << 10)) --seed $((seed + 1))
	"$SB" fill "$s/seg-01/data_level0.bin" $((2818 << 10)) --seed $((seed + 2))
}

# ---- figures 1 and 2: capture cost -----------------------------------------------------------

fig1() {
	log "figure 1: full capture of the 1 GiB store vs cp -a, both from a warm page cache"
	local s=$W/store1 r t
	local -a tcp=() tcap=() rat=() trw=() thash=() tproto=() ccp=() ccap=() tub=() rub=()
	warm "$s"
	# One untimed round first: on a VM the first touch of fresh guest memory is slow (the
	# host backs it on demand), and whichever copy ran first would pay for it.
	cp -a "$s" "$W/cp"; rm -rf "$W/cp"
	"$STILLCTL" snapshot "$s" "$W/snap" 2>>"$RAW"; rm -rf "$W/snap"; sync
	for r in $(seq "$REPS"); do
		t=$(timed cp -a "$s" "$W/cp") && { tcp+=("$t"); ccp+=("$(cpu_s)"); }
		rm -rf "$W/cp"; sync
		t=$(timed "$STILLCTL" snapshot "$s" "$W/snap") && { tcap+=("$t"); ccap+=("$(cpu_s)"); }
		rm -rf "$W/snap"; sync
		isnum "${tcp[-1]:-x}" && isnum "${tcap[-1]:-x}" && rat+=("$(calc "${tcp[-1]} / ${tcap[-1]}" 3)")
		t=$(timed "$STILLCTL" snapshot --uploads-before "$BENCH_T0" "$s" "$W/snap") && tub+=("$t")
		rm -rf "$W/snap"; sync
		isnum "${tcp[-1]:-x}" && isnum "${tub[-1]:-x}" && rub+=("$(calc "${tcp[-1]} / ${tub[-1]}" 3)")
		# Floors: the same bytes read and hashed on 2 threads (no writing); copied through a
		# 1 MiB buffer (no hashing); and the proposed engine copy (copy_file_range + hashing
		# the source through mmap on 2 threads).
		thash+=("$(sb hashtree "$s" --threads 2 | kv seconds)")
		t=$(sb rwcopy "$s" "$W/rw" | kv seconds) && trw+=("$t")
		rm -rf "$W/rw"; sync
		t=$(sb cfrcopy "$s" "$W/proto" --threads 2 | kv seconds) && tproto+=("$t")
		rm -rf "$W/proto"; sync
	done
	local mcp mcap mr
	mcp=$(printf '%s\n' "${tcp[@]}" | med); mcap=$(printf '%s\n' "${tcap[@]}" | med)
	mr=$(printf '%s\n' "${rat[@]}" | med)
	row 1 "full capture, 1 GiB store, vs cp -a (both warm)" \
	    "$(calc "$mr" 2)× (capture $(calc "$mcap") s, cp -a $(calc "$mcp") s)" "≥ 0.9×" "$(verdict "$mr" '>=' 0.9)"
	mr=$(printf '%s\n' "${rub[@]}" | med)
	row 1 "the same, no upload since (--uploads-before: no whole-second wait)" \
	    "$(calc "$mr" 2)× (capture $(calc "$(printf '%s\n' "${tub[@]}" | med)") s)" "≥ 0.9×" "$(verdict "$mr" '>=' 0.9)"
	local hm1 hm2 hml hmm
	hm1=$(sb hashmem --mib 1024 --threads 1 | kv mibps)
	hm2=$(sb hashmem --mib 1024 --threads 2 | kv mibps)
	hml=$(sb hashmem --mib 1024 --threads 1 --many)
	hmm=$(kv mibps <<<"$hml")
	local mh mrw mp
	mh=$(printf '%s\n' "${thash[@]}" | med); mrw=$(printf '%s\n' "${trw[@]}" | med)
	mp=$(printf '%s\n' "${tproto[@]}" | med)
	note "fig1: SHA-256 of hot 1 MiB blocks (engine code): one at a time (libcrypto) ${hm1} MiB/s on 1 core, ${hm2} MiB/s on 2 processes; side by side as the engine hashes large files ($(kv lanes <<<"$hml") lanes) ${hmm} MiB/s on 1 core"
	note "fig1: read+hash of the store on 2 threads, no writes: $(calc "$mh") s = $(calc "$mcp / $mh") × cp -a"
	note "fig1: read/write copy of the store through a 1 MiB buffer, no hashing: $(calc "$mrw") s = $(calc "$mcp / $mrw") × cp -a"
	note "fig1: prototype copy_file_range + mmap hashing on 2 threads: $(calc "$mp") s = $(calc "$mcp / $mp") × cp -a"
	local mccp mccap
	mccp=$(printf '%s\n' "${ccp[@]}" | med); mccap=$(printf '%s\n' "${ccap[@]}" | med)
	note "fig1: CPU time (user+sys, medians): cp -a $(calc "$mccp") s, capture $(calc "$mccap") s; hashing 1 GiB alone takes $(calc "1024 / $hmm") CPU-s, so on $(nproc) cores a capture that copies like cp and hashes every byte needs at least $(calc "(1024 / $hmm + $mccp) / $(nproc)") s: at best $(calc "$mcp / ((1024 / $hmm + $mccp) / $(nproc))") × this run's cp -a"
	note "fig1: cp -a times: ${tcp[*]}; capture times: ${tcap[*]}; with --uploads-before: ${tub[*]}"
}

fig2() {
	log "figure 2: incremental capture after 1% changed vs the full capture"
	local s=$W/store1 r t1 t2 copied=""
	local -a rat=() tf=() ti=()
	for r in $(seq "$WREPS"); do
		rm -rf "$W/snapA" "$W/snapB"
		t1=$(timed "$STILLCTL" snapshot "$s" "$W/snapA") || continue
		sync # the full capture's writeback is its own, not the incremental's
		mutate_store1 "$s" $((100 * r)); still
		t2=$(timed "$STILLCTL" snapshot --recycle "$W/snapA" "$s" "$W/snapB") || continue
		copied=$(tail -3 "$RAW" | ctl_copied)
		tf+=("$t1"); ti+=("$t2"); rat+=("$(calc "$t2 / $t1" 3)")
		sync
	done
	# The fixed cost: an incremental capture when nothing changed at all.
	local -a tz=()
	sleep 2.1 # past the racy-timestamp window of the last changes
	rm -rf "$W/snapA"
	"$STILLCTL" snapshot "$s" "$W/snapA" 2>>"$RAW"
	for r in $(seq "$WREPS"); do
		rm -rf "$W/snapB"
		t=$(timed "$STILLCTL" snapshot --previous "$W/snapA" "$s" "$W/snapB") && tz+=("$t")
	done
	note "fig2: incremental capture with nothing changed, four back to back from the same previous snapshot: $(printf '%s\n' "${tz[@]}" | med) s (runs: ${tz[*]}; each after the first links the previous snapshot's files a moment after the one before did, which dates its last change, so it waits for the next whole second)"
	rm -rf "$W/snapA" "$W/snapB"
	local mr
	mr=$(printf '%s\n' "${rat[@]}" | med)
	row 2 "incremental capture after 1% changed (--recycle the previous; store still 3.2 s), vs full" \
	    "$(calc "$mr * 100" 0)% ($(calc "$(printf '%s\n' "${ti[@]}" | med)") s vs $(calc "$(printf '%s\n' "${tf[@]}" | med)") s; ${copied:-?} copied)" \
	    "≤ 10%" "$(verdict "$mr" '<=' 0.10)"
	note "fig2: incremental times ${ti[*]}; full ${tf[*]}; bytes copied by the incremental: ${copied:-?}"
	# The same pairs without the whole-second wait: nothing taken in this run was ever
	# uploaded, so "no upload since the benchmark started" is true (stillctl --uploads-before).
	local ub=$BENCH_T0
	local -a rat2=() tf2=() ti2=()
	for r in $(seq "$WREPS"); do
		rm -rf "$W/snapA" "$W/snapB"
		t1=$(timed "$STILLCTL" snapshot --uploads-before "$ub" "$s" "$W/snapA") || continue
		sync
		mutate_store1 "$s" $((100 * r + 50)); still
		t2=$(timed "$STILLCTL" snapshot --uploads-before "$ub" --recycle "$W/snapA" "$s" "$W/snapB") || continue
		tf2+=("$t1"); ti2+=("$t2"); rat2+=("$(calc "$t2 / $t1" 3)")
	done
	# The same incremental started right after the change: the quiet window first.
	local -a tq=()
	for r in $(seq "$WREPS"); do
		rm -rf "$W/snapA" "$W/snapB"
		"$STILLCTL" snapshot -q --uploads-before "$ub" "$s" "$W/snapA" 2>>"$RAW" || continue
		sync
		mutate_store1 "$s" $((100 * r + 70))
		t=$(timed "$STILLCTL" snapshot --uploads-before "$ub" --recycle "$W/snapA" "$s" "$W/snapB") && tq+=("$t")
	done
	note "fig2: the incremental started right after the change (it waits out the 400 ms quiet window first): $(printf '%s\n' "${tq[@]}" | med) s (runs: ${tq[*]})"
	rm -rf "$W/snapA" "$W/snapB"
	mr=$(printf '%s\n' "${rat2[@]}" | med)
	row 2 "the same, no upload since (--uploads-before: no whole-second wait)" \
	    "$(calc "$mr * 100" 0)% ($(calc "$(printf '%s\n' "${ti2[@]}" | med)") s vs $(calc "$(printf '%s\n' "${tf2[@]}" | med)") s)" \
	    "≤ 10%" "$(verdict "$mr" '<=' 0.10)"
	note "fig2 --uploads-before: incremental times ${ti2[*]}; full ${tf2[*]}"
}

# ---- figures 3 and 4: a writer while snapshots are taken ------------------------------------

# pace T0: sleep out the rest of a 2 s period that began at T0 (none if it ran over)
pace() {
	local el
	el=$(calc "$(now) - $1" 3)
	[ -e "$W/stop" ] || ! awk "BEGIN{exit !($el < 2)}" || sleep "$(calc "2 - $el" 3)"
}
# Background loop: a snapshot every 2 s (back to back when one takes longer), each incremental
# on the one before, which it recycles (--recycle) as the daemon does its last deleted
# generation; only the newest is kept. PREFIX runs the command
# (e.g. "nice -n 19 ionice -c 3").
loop_ctl() {
	local s=$1 prev=$2 i=0 t0
	shift 2
	while [ ! -e "$W/stop" ]; do
		t0=$(now)
		if "$@" "$STILLCTL" snapshot ${prev:+--recycle "$prev"} "$s" "$W/loop.$i" >>"$W/loop.log" 2>&1; then
			[ -n "$prev" ] && rm -rf "$prev"
			prev=$W/loop.$i
		fi
		i=$((i + 1))
		pace "$t0"
	done
	[ -n "$prev" ] && rm -rf "$prev"
}
# Control: no locks, no hashing, no consistency: cp of the database (the bytes an incremental
# capture copies) every 2 s. What merely copying that much costs the writer on this machine.
loop_cp() {
	local s=$1 i=0 t0
	while [ ! -e "$W/stop" ]; do
		t0=$(now)
		cp --reflink=never "$s/chroma.sqlite3" "$W/loop.cp.$i"
		rm -f "$W/loop.cp.$((i - 1))"
		echo "copied" >>"$W/loop.log"
		i=$((i + 1))
		pace "$t0"
	done
	rm -f "$W"/loop.cp.*
}
# Background loop through the daemon: a new generation, then what an uploader does with it:
# list every entry, read the files that changed (the database).
loop_daemon() {
	local mnt=$1 t0
	while [ ! -e "$W/stop" ]; do
		t0=$(now)
		"$STILLCTL" refresh "$mnt" >>"$W/loop.log" 2>&1
		find "$mnt/.snapshot/" -type f | wc -l >/dev/null
		cat "$mnt/.snapshot/chroma.sqlite3" >/dev/null 2>>"$W/loop.log"
		pace "$t0"
	done
}

# none: the writer alone; ctl: stillctl snapshot; cp: the control above; daemon: stillfs refresh
# and read; nice (BENCH_NICE=1): stillctl under nice -n 19 ionice -c 3.
WCONDS="none ctl cp daemon"
[ "${BENCH_NICE:-0}" = 1 ] && WCONDS="$WCONDS nice"
# writer_runs FIG WALFLAG: interleaved none / stillctl / daemon; fills W_* arrays
writer_runs() {
	local fig=$1 walflag=$2 s=$W/store1 r cond out lp
	declare -gA WR=()
	for r in $(seq "$WREPS"); do
		for cond in $WCONDS; do
			[ "$cond" = daemon ] && [ -z "${MNT3:-}" ] && continue
			rm -f "$W/stop"
			: >"$W/loop.log"
			lp=""
			# Snapshot loops start from a snapshot taken beforehand (not timed): steady state.
			case $cond in
				ctl|nice) rm -rf "$W/loop.base"
					"$STILLCTL" snapshot "$s" "$W/loop.base" >>"$RAW" 2>&1 ;;
			esac
			case $cond in
				ctl) loop_ctl "$s" "$W/loop.base" & lp=$! ;;
				nice) loop_ctl "$s" "$W/loop.base" nice -n 19 ionice -c 3 & lp=$! ;;
				cp) loop_cp "$s" & lp=$! ;;
				daemon) loop_daemon "$MNT3" & lp=$! ;;
			esac
			out=$(sb sqlw "$s/chroma.sqlite3" $walflag --sync full --seconds "$SECS")
			touch "$W/stop"
			[ -n "$lp" ] && wait "$lp"
			WR[$cond,rate,$r]=$(kv rate <<<"$out")
			WR[$cond,p99,$r]=$(kv p99_ms <<<"$out")
			WR[$cond,max,$r]=$(kv max_ms <<<"$out")
			WR[$cond,p50,$r]=$(kv p50_ms <<<"$out")
			if [ "$cond" = cp ]; then
				WR[$cond,snaps,$r]=$(grep -c '^copied' "$W/loop.log")
			elif [ "$cond" = ctl ] || [ "$cond" = nice ]; then
				WR[$cond,snaps,$r]=$(grep -c 'stillctl: snapshot' "$W/loop.log")
				WR[$cond,lock,$r]=$(grep -o 'longest lock [0-9.]* ms' "$W/loop.log" | awk '{print $3}' | maxof)
				WR[$cond,cap,$r]=$(grep -o 'cloned, [0-9.]* s' "$W/loop.log" | awk '{print $2}' | med)
			elif [ "$cond" = daemon ]; then
				WR[$cond,snaps,$r]=$(grep -c '^generation' "$W/loop.log")
				WR[$cond,lock,$r]=$(grep -o 'longest lock [0-9.]* s' "$W/loop.log" | awk '{print $3 * 1000}' | maxof)
				WR[$cond,cap,$r]=$(grep -o 'captured in [0-9.]* s' "$W/loop.log" | awk '{print $3}' | med)
			fi
			echo "fig$fig rep $r $cond: $out snaps=${WR[$cond,snaps,$r]:-} lock_ms=${WR[$cond,lock,$r]:-} capture_s=${WR[$cond,cap,$r]:-}" >>"$RAW"
			cat "$W/loop.log" >>"$RAW"
		done
	done
}
# wr_ratio COND KEY: median over reps of WR[COND,KEY,r] / WR[none,KEY,r]
wr_ratio() {
	local r
	for r in $(seq "$WREPS"); do
		isnum "${WR[$1,$2,$r]:-x}" && isnum "${WR[none,$2,$r]:-x}" && calc "${WR[$1,$2,$r]} / ${WR[none,$2,$r]}" 4 && echo
	done | med
}
wr_med() { local r; for r in $(seq "$WREPS"); do echo "${WR[$1,$2,$r]:-}"; done | grep . | med; }
wr_max() { local r; for r in $(seq "$WREPS"); do echo "${WR[$1,$2,$r]:-}"; done | grep . | maxof; }

mount_fig34() {
	MNT3=""
	[ "$HAVE_SF" = 1 ] || return 0
	start_stillfs "$W/store1" "$W/mnt3" "$W/cache3" "snapshot_linger=0${BENCH_SFOPTS:+,$BENCH_SFOPTS}" || return 0
	MNT3=$W/mnt3
	MNT3_PID=$SF_PID
	ls "$MNT3/.snapshot" >/dev/null # a first generation, so that refreshes are incremental
	# Figure 9: the daemon's memory while it captures the 1 GiB store, sampled throughout.
	"$SB" rss "$MNT3_PID" "$W/rss3.txt" --ms 20 &
	RSS3_PID=$!
	BGPIDS+=("$RSS3_PID")
}
umount_fig34() {
	[ -n "${MNT3:-}" ] || return 0
	kill "$RSS3_PID" 2>/dev/null; wait "$RSS3_PID" 2>/dev/null
	stop_mount "$MNT3" "$MNT3_PID"
	MNT3=""
}

fig3() {
	log "figure 3: rollback-journal writer (1 row/tx, synchronous=FULL) with a snapshot every 2 s"
	writer_runs 3 ""
	local rc rd
	rc=$(wr_ratio ctl rate)
	row 3 "rollback writer commits/s, stillctl snapshot every 2 s" \
	    "$(calc "$rc")× ($(calc "$(wr_med ctl rate)" 0) vs $(calc "$(wr_med none rate)" 0)/s); longest stall $(calc "$(wr_max ctl max)" 0) ms (none: $(calc "$(wr_max none max)" 0) ms)" \
	    "≥ 0.9×" "$(verdict "$rc" '>=' 0.9)"
	local hold; hold=$(wr_max ctl lock)
	row 3 "longest rollback-database hold (engine), 512 MiB, stillctl every 2 s" \
	    "$(calc "$hold" 1) ms" "≤ 60 ms" "$(verdict "$hold" '<=' 60)"
	note "fig3 ctl: snapshots per run ${WR[ctl,snaps,1]:-?}, median capture $(wr_med ctl cap) s, longest lock hold (as the engine reports it) $(wr_max ctl lock) ms; commit p50 $(wr_med ctl p50) ms vs $(wr_med none p50) ms"
	note "fig3 control, cp of the database every 2 s (no locks, no hashing): $(calc "$(wr_ratio cp rate)")× commits/s, longest $(calc "$(wr_max cp max)" 0) ms, p50 $(wr_med cp p50) ms"
	[[ "$WCONDS" == *nice* ]] && note "fig3 stillctl under nice -n 19 ionice -c 3: $(calc "$(wr_ratio nice rate)")× commits/s, longest $(calc "$(wr_max nice max)" 0) ms, median capture $(wr_med nice cap) s"
	if [ -n "${MNT3:-}" ]; then
		rd=$(wr_ratio daemon rate)
		row 3 "rollback writer commits/s, stillfs refresh + read every 2 s" \
		    "$(calc "$rd")× ($(calc "$(wr_med daemon rate)" 0)/s); longest stall $(calc "$(wr_max daemon max)" 0) ms" \
		    "≥ 0.9×" "$(verdict "$rd" '>=' 0.9)"
		note "fig3 daemon: generations per run ${WR[daemon,snaps,1]:-?}, median capture $(wr_med daemon cap) s, longest lock hold $(wr_max daemon lock) ms"
	fi
}

fig4() {
	log "figure 4: WAL writer (1 row/tx, synchronous=FULL) with a snapshot every 2 s"
	writer_runs 4 "--wal"
	local rc rd
	rc=$(wr_ratio ctl p99)
	row 4 "WAL writer p99 commit latency, stillctl snapshot every 2 s" \
	    "$(calc "$rc")× ($(calc "$(wr_med ctl p99)" 2) vs $(calc "$(wr_med none p99)" 2) ms); commits/s $(calc "$(wr_ratio ctl rate)")×; longest $(calc "$(wr_max ctl max)" 0) ms" \
	    "≤ 1.2×" "$(verdict "$rc" '<=' 1.2)"
	note "fig4 ctl: median capture $(wr_med ctl cap) s; p50 $(wr_med ctl p50) ms vs $(wr_med none p50) ms"
	note "fig4 control, cp of the database every 2 s: p99 $(calc "$(wr_ratio cp p99)")×, commits/s $(calc "$(wr_ratio cp rate)")×"
	[[ "$WCONDS" == *nice* ]] && note "fig4 stillctl under nice -n 19 ionice -c 3: p99 $(calc "$(wr_ratio nice p99)")×, commits/s $(calc "$(wr_ratio nice rate)")×, median capture $(wr_med nice cap) s"
	if [ -n "${MNT3:-}" ]; then
		rd=$(wr_ratio daemon p99)
		row 4 "WAL writer p99 commit latency, stillfs refresh + read every 2 s" \
		    "$(calc "$rd")× ($(calc "$(wr_med daemon p99)" 2) ms); commits/s $(calc "$(wr_ratio daemon rate)")×; longest $(calc "$(wr_max daemon max)" 0) ms" \
		    "≤ 1.2×" "$(verdict "$rd" '<=' 1.2)"
		note "fig4 daemon: median capture $(wr_med daemon cap) s"
	fi
	# Leave the database as the other figures found it.
	sqlite3 "$W/store1/chroma.sqlite3" 'PRAGMA journal_mode=DELETE' >/dev/null 2>&1
}

# ---- figures 5, 6, 6b: reading a snapshot ----------------------------------------------------

fig5_6() {
	[ "$HAVE_SF" = 1 ] || { for f in 5 6 6b; do row "$f" "snapshot reads" "n/a (no stillfs daemon built)" "" "n/a"; done; return; }
	log "figures 5, 6, 6b: reading a freshly captured 1 GiB file under .snapshot/"
	mkdir -p "$W/big"
	"$SB" fill "$W/big/blob.bin" $((1 << 30)) --seed 11
	start_stillfs "$W/big" "$W/mntb" "$W/cacheb" || return
	local bpid=$SF_PID t
	t=$(timed ls "$W/mntb/.snapshot")
	note "fig5: capture of the 1 GiB file on first ls of .snapshot: $t s"
	local N F P="" r
	N=$(ls -d "$W"/cacheb/gen-*/blob.bin 2>/dev/null | tail -1)
	F=$W/mntb/.snapshot/blob.bin
	[ -n "$N" ] || { echo "bench: no backing copy found in $W/cacheb" >&2; stop_mount "$W/mntb" "$bpid"; return; }
	local ppid=""
	if [ "$HAVE_PT" = 1 ] && start_pt "$(dirname "$N")" "$W/mntp"; then P=$W/mntp/blob.bin; ppid=$PT_PID; fi
	declare -A R5=()
	# 5: the backing copy in the page cache, the FUSE inode's pages evicted (as on first open
	# of a new generation's file).
	cat "$N" >/dev/null
	for r in $(seq "$REPS"); do
		R5[n,$r]=$(sb read "$N" seq | kv mibps)
		sb read "$F" evict; R5[f,$r]=$(sb read "$F" seq | kv mibps)
		[ -n "$P" ] && { sb read "$P" evict; R5[p,$r]=$(sb read "$P" seq | kv mibps); }
	done
	# sanity: a second read without evicting is served from the FUSE inode's cache
	note "fig5: re-read through .snapshot without evicting (kernel cache): $(sb read "$F" seq | kv mibps) MiB/s"
	# 6b: 16 KiB random reads, backing copy warm, FUSE pages evicted
	for r in $(seq "$REPS"); do
		R5[rn,$r]=$(sb read "$N" rand --count 16384 --seed "$r" | kv iops)
		sb read "$F" evict; R5[rf,$r]=$(sb read "$F" rand --count 16384 --seed "$r" | kv iops)
		[ -n "$P" ] && { sb read "$P" evict; R5[rp,$r]=$(sb read "$P" rand --count 16384 --seed "$r" | kv iops); }
	done
	# 6: everything cold
	for r in $(seq "$WREPS"); do
		dropc; R5[cn,$r]=$(sb read "$N" seq | kv mibps)
		dropc; R5[cf,$r]=$(sb read "$F" seq | kv mibps)
		[ -n "$P" ] && { dropc; R5[cp,$r]=$(sb read "$P" seq | kv mibps); }
	done
	r5() { # r5 KEY BASE REPS: median ratio
		local i
		for i in $(seq "$3"); do
			isnum "${R5[$1,$i]:-x}" && isnum "${R5[$2,$i]:-x}" && calc "${R5[$1,$i]} / ${R5[$2,$i]}" 4 && echo
		done | med
	}
	m5() { local i; for i in $(seq "$2"); do echo "${R5[$1,$i]:-}"; done | grep . | med; }
	local a b pt
	a=$(r5 f n "$REPS"); pt=""
	[ -n "$P" ] && pt="; passthrough_ll $(calc "$(r5 p n "$REPS")")×"
	row 5 "first sequential read of a 1 GiB .snapshot file, backing copy cached" \
	    "$(calc "$a")× ($(calc "$(m5 f "$REPS")" 0) vs $(calc "$(m5 n "$REPS")" 0) MiB/s)$pt" "≥ 0.3×" "$(verdict "$a" '>=' 0.3)"
	b=$(r5 cf cn "$WREPS"); pt=""
	[ -n "$P" ] && pt="; passthrough_ll $(calc "$(r5 cp cn "$WREPS")")×"
	row 6 "the same read, all caches dropped" \
	    "$(calc "$b")× ($(calc "$(m5 cf "$WREPS")" 0) vs $(calc "$(m5 cn "$WREPS")" 0) MiB/s)$pt" "≥ 0.95×" "$(verdict "$b" '>=' 0.95)"
	a=$(r5 rf rn "$REPS"); pt=""
	[ -n "$P" ] && pt="; passthrough_ll $(calc "$(r5 rp rn "$REPS")")×"
	row 6b "16 KiB random reads of that file, backing copy cached" \
	    "$(calc "$a")× ($(calc "$(m5 rf "$REPS")" 0) vs $(calc "$(m5 rn "$REPS")" 0) reads/s)$pt" "≥ 0.3×" "$(verdict "$a" '>=' 0.3)"
	[ -n "$ppid" ] && stop_mount "$W/mntp" "$ppid"
	stop_mount "$W/mntb" "$bpid"
	rm -rf "$W/big" "$W/cacheb"
}

# ---- figure 7: SQLite through the live view --------------------------------------------------

fig7() {
	[ "$HAVE_SF" = 1 ] || { row 7 "SQLite through the live view" "n/a (no stillfs daemon built)" "" "n/a"; return; }
	log "figure 7: SQLite commits/s through the live view vs directly on the store"
	mkdir -p "$W/live"
	sb sqlfill "$W/live/w.db" $((4 << 20)) >/dev/null
	start_stillfs "$W/live" "$W/mntl" "$W/cachel" || return
	local lpid=$SF_PID ppid="" P="" sync r
	if [ "$HAVE_PT" = 1 ] && start_pt "$W/live" "$W/mntlp"; then P=$W/mntlp; ppid=$PT_PID; fi
	declare -A R7=()
	for sync in full normal; do
		for r in $(seq "$WREPS"); do
			R7[$sync,d,$r]=$(sb sqlw "$W/live/w.db" --sync $sync --seconds "$SECS7" | kv rate)
			R7[$sync,f,$r]=$(sb sqlw "$W/mntl/w.db" --sync $sync --seconds "$SECS7" | kv rate)
			[ -n "$P" ] && R7[$sync,p,$r]=$(sb sqlw "$P/w.db" --sync $sync --seconds "$SECS7" | kv rate)
		done
		local i rf rp pt=""
		rf=$(for i in $(seq "$WREPS"); do calc "${R7[$sync,f,$i]:-nan} / ${R7[$sync,d,$i]:-nan}" 4; echo; done | grep -v nan | med)
		if [ -n "$P" ]; then
			rp=$(for i in $(seq "$WREPS"); do calc "${R7[$sync,p,$i]:-nan} / ${R7[$sync,d,$i]:-nan}" 4; echo; done | grep -v nan | med)
			pt="; passthrough_ll $(calc "$rp")×"
		fi
		local mf md
		mf=$(for i in $(seq "$WREPS"); do echo "${R7[$sync,f,$i]}"; done | med)
		md=$(for i in $(seq "$WREPS"); do echo "${R7[$sync,d,$i]}"; done | med)
		row 7 "SQLite rollback commits/s via live view, synchronous=${sync^^}" \
		    "$(calc "$rf")× ($(calc "$mf" 0) vs $(calc "$md" 0)/s)$pt" "≥ 0.7×" "$(verdict "$rf" '>=' 0.7)"
	done
	[ -n "$ppid" ] && stop_mount "$W/mntlp" "$ppid"
	stop_mount "$W/mntl" "$lpid"
}

# ---- figures 8 and 9: metadata and memory ----------------------------------------------------

fig8() {
	[ "$HAVE_SF" = 1 ] || { row 8 "metadata through the live view" "n/a (no stillfs daemon built)" "" "n/a"; return; }
	log "figure 8: stat and open/close of 10,000 files through the live view vs native"
	"$SB" tree "$W/meta" 10000 --size 100
	start_stillfs "$W/meta" "$W/mntm" "$W/cachem" || return
	MNTM_PID=$SF_PID
	local P="" r op i
	if [ "$HAVE_PT" = 1 ] && start_pt "$W/meta" "$W/mntmp"; then P=$W/mntmp; MNTMP_PID=$PT_PID; fi
	declare -A R8=()
	# Same cache state on every side: one untimed pass each (the kernel's dentry and inode
	# caches; a FUSE mount keeps them only as long as its timeouts allow).
	"$SB" meta "$W/meta" 10000 stat >/dev/null
	"$SB" meta "$W/mntm" 10000 stat >/dev/null
	[ -n "$P" ] && "$SB" meta "$P" 10000 stat >/dev/null
	for r in $(seq "$REPS"); do
		for op in stat open; do
			R8[$op,n,$r]=$(sb meta "$W/meta" 10000 $op | kv opsps)
			R8[$op,f,$r]=$(sb meta "$W/mntm" 10000 $op | kv opsps)
			[ -n "$P" ] && R8[$op,p,$r]=$(sb meta "$P" 10000 $op | kv opsps)
		done
	done
	for op in stat open; do
		local rf rp pt="" mf mn
		rf=$(for i in $(seq "$REPS"); do calc "${R8[$op,f,$i]:-nan} / ${R8[$op,n,$i]:-nan}" 4; echo; done | grep -v nan | med)
		mf=$(for i in $(seq "$REPS"); do echo "${R8[$op,f,$i]}"; done | med)
		mn=$(for i in $(seq "$REPS"); do echo "${R8[$op,n,$i]}"; done | med)
		if [ -n "$P" ]; then
			rp=$(for i in $(seq "$REPS"); do calc "${R8[$op,p,$i]:-nan} / ${R8[$op,n,$i]:-nan}" 4; echo; done | grep -v nan | med)
			pt="; passthrough_ll $(calc "$rp")×"
		fi
		local what=stat tgt=0.5; [ "$op" = open ] && what="open+close" tgt=0.3
		row 8 "$what of 10,000 files via live view" \
		    "$(calc "$rf")× ($(calc "$mf" 0) vs $(calc "$mn" 0)/s)$pt" "≥ $tgt×" "$(verdict "$rf" '>=' "$tgt")"
	done
	# What one stat costs: the same path stat'ed 20,000 times (a FUSE round trip per component
	# when entries may not be cached).
	local one
	one="native $(sb meta "$W/meta" 20000 statone | kv us_per_op) us, stillfs $(sb meta "$W/mntm" 20000 statone | kv us_per_op) us"
	[ -n "$P" ] && one="$one, passthrough_ll $(sb meta "$P" 20000 statone | kv us_per_op) us"
	note "fig8: one stat of MOUNT/d0000/f000000 repeated: $one"
	[ -n "$P" ] && stop_mount "$W/mntmp" "$MNTMP_PID"
	# $W/mntm stays for figure 9's 10,000-file comparison.
}

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }

# rss_walk MNT PID: touch every live entry, capture, touch every snapshot entry; then change
# one file and capture again (incremental: the helper also holds the previous manifest) and
# walk that generation. RSS after each step.
rss_walk() {
	local mnt=$1 pid=$2 a b c d g t t2 n1 n2 n3 e1 e2 e3 f
	a=$(rss_kib "$pid")
	n1=$(find "$mnt/" -type f 2>"$W/find.err" | wc -l); e1=$(wc -l <"$W/find.err")
	b=$(rss_kib "$pid")
	t=$(timed ls "$mnt/.snapshot")
	c=$(rss_kib "$pid")
	n2=$(find "$mnt/.snapshot/" -type f 2>"$W/find.err" | wc -l); e2=$(wc -l <"$W/find.err")
	d=$(rss_kib "$pid")
	f=$(find "$mnt/" -path "$mnt/.snapshot" -prune -o -type f -print -quit)
	echo changed >>"$f"
	t2=$(timed "$STILLCTL" refresh "$mnt")
	n3=$(find "$mnt/.snapshot/" -type f 2>"$W/find.err" | wc -l); e3=$(wc -l <"$W/find.err")
	g=$(rss_kib "$pid")
	echo "idle=$a live_walked=$b captured=$c snap_walked=$d second_walked=$g capture_s=$t second_s=$t2 live_files=$n1 live_errors=$e1 snap_files=$n2 snap_errors=$e2 second_files=$n3 second_errors=$e3 nofile=$(awk '/Max open files/{print $4}' "/proc/$pid/limits")"
}

fig9() {
	[ "$HAVE_SF" = 1 ] || { row 9 "daemon memory" "n/a (no stillfs daemon built)" "" "n/a"; return; }
	log "figure 9: daemon resident memory, 100,000-file store and during a 1 GiB capture"
	local small="" big r10 peak helper
	if [ -n "${MNTM_PID:-}" ] && kill -0 "$MNTM_PID" 2>/dev/null; then
		small=$(rss_walk "$W/mntm" "$MNTM_PID")
		stop_mount "$W/mntm" "$MNTM_PID"
		note "fig9: 10,000-file store, daemon VmRSS KiB: $small"
	fi
	"$SB" tree "$W/rss" 100000
	start_stillfs "$W/rss" "$W/mntr" "$W/cacher" || return
	local rpid=$SF_PID
	"$SB" rss "$rpid" "$W/rss100k.txt" --ms 20 &
	local spid=$!
	BGPIDS+=("$spid")
	big=$(rss_walk "$W/mntr" "$rpid")
	kill "$spid"; wait "$spid" 2>/dev/null
	note "fig9: 100,000-file store, daemon VmRSS KiB: $big; sampled: $(cat "$W/rss100k.txt")"
	stop_mount "$W/mntr" "$rpid"
	peak=$(kv rss_peak_kib <"$W/rss100k.txt"); helper=$(kv child_peak_kib <"$W/rss100k.txt")
	local errs=""
	[ "$(kv capture_s <<<"$big")" = fail ] && errs="; capture FAILED ($(grep -o 'capture failed ([^)]*)' "$W/stillfs.log" | tail -1 | sed 's/capture failed //'))"
	[ "$(kv live_errors <<<"$big")" != 0 ] && errs="$errs; $(kv live_errors <<<"$big") of 100,000 files unreachable in the live view (daemon RLIMIT_NOFILE $(kv nofile <<<"$big"))"
	[ "$(kv second_s <<<"$big")" = fail ] && errs="$errs; the second (incremental) capture FAILED"
	[ "$(kv second_files <<<"$big")" != "$(kv snap_files <<<"$big")" ] && errs="$errs; the second generation has $(kv second_files <<<"$big") files, the first $(kv snap_files <<<"$big")"
	r10=$(kv snap_walked <<<"$small")
	local flat=""
	isnum "${r10:-x}" && flat="; 10,000 files: $(calc "$r10 / 1024" 1) MiB"
	local ok
	ok=$(verdict "$(calc "($peak > $helper ? $peak : $helper) / 1024" 1)" '<=' 64)
	[ -n "$errs" ] && ok=miss
	row 9 "daemon RSS, 100,000-file store (all entries walked, captured twice)" \
	    "daemon $(calc "$peak / 1024" 1) MiB peak, capture helper $(calc "$helper / 1024" 1) MiB$flat$errs" "≤ 64 MiB, flat" "$ok"
	if [ -s "$W/rss3.txt" ]; then
		peak=$(kv rss_peak_kib <"$W/rss3.txt"); helper=$(kv child_peak_kib <"$W/rss3.txt")
		ok=$(verdict "$(calc "($peak > $helper ? $peak : $helper) / 1024" 1)" '<=' 64)
		row 9 "daemon RSS during captures of the 1 GiB store (figures 3-4)" \
		    "daemon $(calc "$peak / 1024" 1) MiB peak, capture helper $(calc "$helper / 1024" 1) MiB (its own memory, RssAnon, $(calc "$(kv child_anon_peak_kib <"$W/rss3.txt") / 1024" 1) MiB at most: the rest is page cache it maps)" "≤ 64 MiB" "$ok"
	fi
	rm -rf "$W/rss" "$W/cacher" "$W/meta" "$W/cachem"
}

# ---- figure 10: the first look at .snapshot --------------------------------------------------

fig10() {
	[ "$HAVE_SF" = 1 ] || { row 10 "first ls of .snapshot" "n/a (no stillfs daemon built)" "" "n/a"; return; }
	log "figure 10: ls MOUNTPOINT/.snapshot on a 10 MiB store with no current generation"
	local s=$W/s10 i r t
	mkdir -p "$s/seg"
	sb sqlfill "$s/chroma.sqlite3" $((4 << 20)) >/dev/null
	for i in $(seq 0 23); do "$SB" fill "$s/seg/f$i.bin" $((256 << 10)) --seed "$i"; done
	sleep 2.1 # older than the engine's 2 s racy-timestamp window, like a store at rest
	# Three cases: the daemon has been up for a while (mounted at boot, the uploader comes
	# later), ls right after its first start on an empty cache, and ls right after a start on
	# the cache of a daemon that stopped a second before (a reboot or redeploy; one file changed
	# meanwhile). The first cut must fall in a later whole second than any upload of an earlier
	# snapshot: on an empty cache that means after the daemon's start (uploads of an earlier
	# daemon's snapshots came before), so right after mounting the capture waits for the next
	# second; with the generation the earlier daemon kept, after the time it stopped.
	local -a tf=() ti=() tk=() tn=()
	for r in $(seq "$REPS"); do
		tn+=("$(timed ls "$s")")
		rm -rf "$W/cache10"
		start_stillfs "$s" "$W/mnt10" "$W/cache10" || continue
		sleep 1.1
		t=$(timed ls "$W/mnt10/.snapshot") && tf+=("$t")
		stop_mount "$W/mnt10" "$SF_PID"
		rm -rf "$W/cache10"
		start_stillfs "$s" "$W/mnt10" "$W/cache10" || continue
		t=$(timed ls "$W/mnt10/.snapshot") && ti+=("$t")
		stop_mount "$W/mnt10" "$SF_PID"
		"$SB" fill "$s/seg/f0.bin" $((256 << 10)) --seed $((100 + r))
		sleep 1.1
		start_stillfs "$s" "$W/mnt10" "$W/cache10" || continue
		t=$(timed ls "$W/mnt10/.snapshot") && tk+=("$t")
		stop_mount "$W/mnt10" "$SF_PID"
	done
	local m mi mk
	m=$(printf '%s\n' "${tf[@]}" | med); mi=$(printf '%s\n' "${ti[@]}" | med)
	mk=$(printf '%s\n' "${tk[@]}" | med)
	row 10 "first ls of .snapshot, 10 MiB store, daemon up > 1 s" \
	    "$(calc "$m * 1000" 0) ms (native ls $(calc "$(printf '%s\n' "${tn[@]}" | med) * 1000" 1) ms)" "≤ 100 ms" "$(verdict "$(calc "$m * 1000" 1)" '<=' 100)"
	row 10 "the same right after a first mount (empty cache)" \
	    "$(calc "$mi * 1000" 0) ms" "≤ 100 ms" "$(verdict "$(calc "$mi * 1000" 1)" '<=' 100)"
	row 10 "the same right after a restart (earlier daemon stopped 1 s before)" \
	    "$(calc "$mk * 1000" 0) ms" "≤ 100 ms" "$(verdict "$(calc "$mk * 1000" 1)" '<=' 100)"
	note "fig10: capture durations the daemon logged: $(grep -o 'generation 1 (.*) ready in [0-9.]* s' "$W/stillfs.log" | grep -o '[0-9.]* s$' | tr '\n' ' ')"
	rm -rf "$s" "$W/cache10"
}

# ---- figure R: the same store on filesystems that clone (XFS, btrfs) ------------------------

# figR FS: a loop-mounted FS (mkfs.xfs -m reflink=1, mkfs.btrfs) holding a copy of the 1 GiB
# store, the snapshots beside it: full capture vs cp -a (which clones there too, coreutils 9),
# and the rollback writer with a stillctl snapshot every 2 s: longest database hold as the
# engine reports it, commits/s against the writer alone, bytes cloned.
figR() {
	local fs=$1 img=$W/rfs-$1.img mnt=$W/rfs-$1 r t
	case $fs in
		xfs) command -v mkfs.xfs >/dev/null || { row R "$fs: clones" "n/a (no mkfs.xfs: xfsprogs)" "" "n/a"; return; } ;;
		btrfs) command -v mkfs.btrfs >/dev/null || { row R "$fs: clones" "n/a (no mkfs.btrfs: btrfs-progs)" "" "n/a"; return; } ;;
	esac
	log "figure R ($fs): the store on a loop-mounted $fs that clones"
	rm -f "$img"; truncate -s 6G "$img"; mkdir -p "$mnt"
	case $fs in
		xfs) mkfs.xfs -q -f -m reflink=1 "$img" ;;
		btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
	esac
	mount -o loop "$img" "$mnt" || { row R "$fs: clones" "n/a (cannot loop-mount)" "" "n/a"; rm -f "$img"; return; }
	local s=$mnt/store
	cp -a --reflink=never "$W/store1" "$s"; sync
	sleep 2.1 # a store at rest (identities older than 2 s)
	local -a tcp=() tcap=() rat=() tinc=() irat=() tinc2=() irat2=()
	local cloned="" copied="" icl="" icp="" mr size=1
	cp -a "$s" "$mnt/cp"; rm -rf "$mnt/cp"
	"$STILLCTL" snapshot -q "$s" "$mnt/snap"; rm -rf "$mnt/snap"; sync
	for r in $(seq 3); do
		t=$(timed cp -a "$s" "$mnt/cp") && tcp+=("$t")
		rm -rf "$mnt/cp"; sync
		t=$(timed "$STILLCTL" snapshot "$s" "$mnt/snap") && tcap+=("$t")
		isnum "${tcp[-1]:-x}" && isnum "${tcap[-1]:-x}" && rat+=("$(calc "${tcp[-1]} / ${tcap[-1]}" 3)")
		[ "$r" = 3 ] && { cloned=$(awk '$1=="bytes_cloned"{print $2}' "$mnt/snap/.stillfs-manifest")
			size=$(du -sb "$s" | cut -f1)
			copied=$(awk '$1=="bytes_copied"{print $2}' "$mnt/snap/.stillfs-manifest"); }
		# The incremental after 1% changed, recycling that full capture, as in figure 2.
		sync; mutate_store1 "$s" $((700 + r)); still
		t=$(timed "$STILLCTL" snapshot --recycle "$mnt/snap" "$s" "$mnt/snapI") && tinc+=("$t")
		isnum "${tinc[-1]:-x}" && isnum "${tcap[-1]:-x}" && irat+=("$(calc "${tinc[-1]} / ${tcap[-1]}" 3)")
		icl=$(awk '$1=="bytes_cloned"{print $2}' "$mnt/snapI/.stillfs-manifest")
		icp=$(awk '$1=="bytes_copied"{print $2}' "$mnt/snapI/.stillfs-manifest")
		rm -rf "$mnt/snap"; mv "$mnt/snapI" "$mnt/snap"
		# Again with no upload since (no whole-second wait), as figure 2's second row.
		sync; mutate_store1 "$s" $((750 + r)); still
		t=$(timed "$STILLCTL" snapshot --uploads-before "$BENCH_T0" --recycle "$mnt/snap" "$s" "$mnt/snapI") && tinc2+=("$t")
		isnum "${tinc2[-1]:-x}" && isnum "${tcap[-1]:-x}" && irat2+=("$(calc "${tinc2[-1]} / ${tcap[-1]}" 3)")
		rm -rf "$mnt/snap"; mv "$mnt/snapI" "$mnt/snap"
		[ "$r" = 3 ] || { rm -rf "$mnt/snap"; sync; }
	done
	mr=$(printf '%s\n' "${rat[@]}" | med)
	local ok
	ok=$(awk "BEGIN{print ($cloned >= 0.99 * $size && $copied < 0.01 * $size) ? \"pass\" : \"miss\"}")
	row R "$fs: full capture of the 1 GiB store: bytes cloned / copied (time vs cp -a, which clones too)" \
	    "$(calc "$cloned / 1048576" 0) MiB cloned, $(calc "$copied / 1048576" 1) MiB copied ($(calc "$(printf '%s\n' "${tcap[@]}" | med)") s vs cp -a $(calc "$(printf '%s\n' "${tcp[@]}" | med)") s: the capture reads and hashes every byte)" \
	    "all cloned" "$ok"
	mr=$(printf '%s\n' "${irat[@]}" | med)
	row R "$fs: incremental capture after 1% changed (--recycle the previous; store still 3.2 s), vs full" \
	    "$(calc "$mr * 100" 0)% ($(calc "$(printf '%s\n' "${tinc[@]}" | med)") s vs $(calc "$(printf '%s\n' "${tcap[@]}" | med)") s; $(calc "${icl:-nan} / 1048576" 1) MiB cloned, $(calc "${icp:-nan} / 1048576" 1) MiB copied)" \
	    "≤ 10%" "$(verdict "$mr" '<=' 0.10)"
	mr=$(printf '%s\n' "${irat2[@]}" | med)
	row R "$fs: the same, no upload since (--uploads-before: no whole-second wait)" \
	    "$(calc "$mr * 100" 0)% ($(calc "$(printf '%s\n' "${tinc2[@]}" | med)") s)" \
	    "≤ 10%" "$(verdict "$mr" '<=' 0.10)"
	note "figR $fs: incremental times ${tinc[*]}; with --uploads-before: ${tinc2[*]}; full: ${tcap[*]}"
	# The rollback writer, alone and with a snapshot every 2 s (each recycling the one before).
	local -a rn=() rc=() holds=() stalls=()
	local out prev i t0
	for r in $(seq 2); do
		out=$(sb sqlw "$s/chroma.sqlite3" --sync full --seconds "$SECS"); rn+=("$(kv rate <<<"$out")")
		rm -f "$W/stop"; : >"$W/loopR.log"
		(
			prev=$mnt/snap i=0
			while [ ! -e "$W/stop" ]; do
				t0=$(now)
				if "$STILLCTL" snapshot --recycle "$prev" "$s" "$mnt/loop.$i" >>"$W/loopR.log" 2>&1; then
					rm -rf "$prev"; prev=$mnt/loop.$i
				fi
				i=$((i + 1))
				pace "$t0"
			done
			rm -rf "$prev"
		) &
		local lp=$!
		out=$(sb sqlw "$s/chroma.sqlite3" --sync full --seconds "$SECS")
		touch "$W/stop"; wait "$lp"
		"$STILLCTL" snapshot -q "$s" "$mnt/snap" 2>>"$RAW" # the next round's base
		rc+=("$(kv rate <<<"$out")"); stalls+=("$(kv max_ms <<<"$out")")
		holds+=("$(grep -o 'longest lock [0-9.]* ms' "$W/loopR.log" | awk '{print $3}' | maxof)")
		echo "figR $fs rep $r: $out" >>"$RAW"; cat "$W/loopR.log" >>"$RAW"
	done
	local hold ratio mrc mrn
	hold=$(printf '%s\n' "${holds[@]}" | grep . | maxof)
	mrc=$(printf '%s\n' "${rc[@]}" | med); mrn=$(printf '%s\n' "${rn[@]}" | med)
	ratio=$(for r in 0 1; do calc "${rc[$r]:-nan} / ${rn[$r]:-nan}" 4; echo; done | grep -v nan | med)
	row R "$fs: longest rollback-database hold (engine), 512 MiB, snapshot every 2 s" \
	    "$(calc "${hold:-nan}" 1) ms; writer $(calc "$ratio")× commits/s ($(calc "$mrc" 0) vs $(calc "$mrn" 0)/s), longest stall $(printf '%s\n' "${stalls[@]}" | maxof) ms" \
	    "≤ 10 ms" "$(verdict "${hold:-x}" '<=' 10)"
	note "figR $fs: cp -a ${tcp[*]}; capture ${tcap[*]}; holds per run ${holds[*]} ms; writer alone ${rn[*]}/s, with snapshots ${rc[*]}/s; space used $(df -BM --output=used "$mnt" | tail -1 | tr -d ' ') for the store, its snapshot and the writer's"
	umount "$mnt" && rm -f "$img"
}

# ---- figure H: SHA-256 single stream against OpenSSL -----------------------------------------

figH() {
	log "figure H: SHA-256 of 1 MiB blocks, one stream: the engine against OpenSSL"
	local r e o
	local -a es=() os=() rat=()
	for r in $(seq "$REPS"); do
		e=$(sb hashmem --mib 256 --threads 1 | kv mibps)
		o=$(openssl speed -elapsed -seconds 1 -bytes 1048576 -evp sha256 2>/dev/null |
		    awk '$1=="sha256"{sub("k","",$2); printf "%.1f", $2 * 1000 / 1048576}')
		isnum "$e" && isnum "$o" && { es+=("$e"); os+=("$o"); rat+=("$(calc "$e / $o" 3)"); }
	done
	local x; x=$(printf '%s\n' "${rat[@]}" | med)
	row H "SHA-256 of 1 MiB blocks, one stream, engine vs OpenSSL $(openssl version | cut -d' ' -f2)" \
	    "$(calc "$x")× ($(calc "$(printf '%s\n' "${es[@]}" | med)" 0) vs $(calc "$(printf '%s\n' "${os[@]}" | med)" 0) MiB/s)" "≥ 1.0× (within noise)" "$(verdict "$x" '>=' 0.95)"
	note "figH: engine ${es[*]} MiB/s; OpenSSL ${os[*]} MiB/s; the engine's single stream is libcrypto's block function, so the two differ by noise only"
}

# ---- run -------------------------------------------------------------------------------------

T0=$(now)
MACHINE=$(machine)
echo "$MACHINE" >>"$RAW"
want() { [[ "$FIGS" == *" $1 "* ]]; }
[ "$HAVE_SF" = 1 ] || note "no stillfs daemon at $STILLFS: figures 5-10 and the daemon columns are skipped"
[ "$HAVE_PT" = 1 ] || note "no passthrough_ll at $PT (Debian's libfuse3-dev ships example/passthrough_ll.c in /usr/share/doc/libfuse3-dev/examples): its columns are skipped"

if want 1 || want 2 || want 3 || want 4 || want R; then
	log "making the 1 GiB store"
	make_store1 "$W/store1" || die "cannot make the store"
	sync
	sleep 2.1 # the engine trusts only identities older than 2 s: a store at rest
fi
want 1 && fig1
want 2 && fig2
if want 3 || want 4; then
	mount_fig34
	want 3 && fig3
	want 4 && fig4
	umount_fig34
	rm -rf "$W/cache3"
fi
if want R; then figR xfs; figR btrfs; fi
rm -rf "$W/store1"
if want 5 || want 6 || want 6b; then fig5_6; fi
want 7 && fig7
want 8 && fig8
want 9 && fig9
want 10 && fig10
want H && figH

# ---- the table -------------------------------------------------------------------------------

{
	echo "## Machine"
	echo
	echo "$MACHINE" | sed 's/^/    /'
	echo "    load average at end: $(cut -d' ' -f1-3 /proc/loadavg); benchmark took $(calc "$(now) - $T0" 0) s"
	echo
	echo "## Results"
	echo
	echo "| # | figure | measured | target | result |"
	echo "|---|---|---|---|---|"
	awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$TABLE"
	echo
	echo "## Diagnostics"
	echo
	sed 's/^/- /' "$NOTES"
} >"$W/table.md"

echo
echo "$MACHINE"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); benchmark took $(calc "$(now) - $T0" 0) s"
echo
sed 's/≥/>=/g; s/≤/<=/g' "$TABLE" | awk -F'\t' '
	BEGIN{printf "%-4s %-66s %-15s %-5s  %s\n", "#", "figure", "target", "", "measured"}
	{printf "%-4s %-66s %-15s %-5s  %s\n", $1, $2, $4, $5, $3}'
echo
sed 's/^/  /' "$NOTES"
echo
echo "details: $W/table.md, $W/raw.log$([ "${BENCH_KEEP:-0}" = 1 ] || echo ' (stores removed; BENCH_KEEP=1 keeps them)')"
exit 0
}
