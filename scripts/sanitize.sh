#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build hygiene: exits non-zero on any finding.
#  1. gcc and clang builds of every target with -Dwerror=true (clang's is the sanitizer build
#     of step 2 when that runs: clang's warnings do not depend on the optimization level);
#  2. a clang build with AddressSanitizer + UndefinedBehaviorSanitizer (also -Werror) that runs
#     the unit suite and the engine integration tests (engine-*, rel-*, with smaller sizes);
#     any sanitizer report fails, whatever the test made of the exit status;
#  3. valgrind memcheck (--leak-check=full, --track-fds) of stillctl snapshot, an incremental
#     snapshot and verify over a store with rollback, WAL (live and cold) and hot-journal
#     databases, a sparse file, symlinks (to outside the store too), a fifo and nested
#     directories; then tests/integration/rel-symlinks.sh with every stillctl under memcheck.
#     valgrind 3.19 (Debian 12) has no openat2: the engine's ENOSYS fallback is what runs.
# Build directories: ${SANITIZE_PREFIX:-build-rel}-{gcc,asan} (-clang with --no-asan), beside the source.
# SANITIZE_GCC=DIR: DIR, if a gcc build configured with -Dwerror=true (scripts/test.sh's own), is
# step 1's gcc build and step 3's stillctl, instead of ${SANITIZE_PREFIX:-build-rel}-gcc.
# --part runs one part, so that scripts/test.sh can run each beside the tests it suits:
#   build  the builds of steps 1 and 2 (and their -Werror check);
#   heavy  under ASan the engine tests of suite 'heavy' (tests/integration/meson.build), one at
#          a time: beside them, only tests that no pause of theirs can fail;
#   pool   under ASan the unit suite and the engine tests that may run beside others (meson's
#          is_parallel; SANITIZE_JOBS at once, meson's default without it), then step 3;
#   alone  under ASan the engine tests of suite 'alone', one at a time: run this part with
#          nothing else on the machine.
# Without --part, the four run in that order. The parts after build build what is missing.
# Usage: scripts/sanitize.sh [--no-build-check] [--no-asan] [--no-valgrind] [--part=build|heavy|pool|alone]
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
prefix=${SANITIZE_PREFIX:-build-rel}
do_build=1 do_asan=1 do_valgrind=1 part=all
for a in "$@"; do
  case $a in
    --no-build-check) do_build=0 ;;
    --no-asan) do_asan=0 ;;
    --no-valgrind) do_valgrind=0 ;;
    --part=build | --part=heavy | --part=pool | --part=alone) part=${a#--part=} ;;
    *) echo "usage: $0 [--no-build-check] [--no-asan] [--no-valgrind] [--part=build|heavy|pool|alone]" >&2; exit 2 ;;
  esac
done
in_part() { [ "$part" = all ] || [ "$part" = "$1" ]; }
findings=()
say() { echo "sanitize: $*" >&2; }
finding() { say "FINDING: $*"; findings+=("$*"); }
t_start=$SECONDS

# setup DIR CC [meson options...]: configure DIR (anew if its options changed) and build all.
setup() {
  local dir=$1 cc=$2; shift 2
  if [ -d "$dir" ]; then
    CC=$cc meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1 || { rm -rf "$dir"; }
  fi
  [ -d "$dir" ] || CC=$cc meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
    { cat "$dir.setup.log" >&2; return 1; }
  # Below whatever runs beside it (scripts/test.sh runs the build part beside tests).
  nice -n 10 ninja -C "$dir" >"$dir.build.log" 2>&1 || { grep -E 'error|warning|FAILED' "$dir.build.log" | head -40 >&2; return 1; }
}
# ensure DIR CC [meson options...]: the parts after build use DIR as it is when it is built.
ensure() {
  if [ -f "$1/build.ninja" ]; then
    nice -n 10 ninja -C "$1" >"$1.build.log" 2>&1 && return 0
  fi
  setup "$@"
}

# gcc_given: SANITIZE_GCC is configured with gcc and -Dwerror=true (else it is not used).
gcc_given() {
  local opts
  [ -n "${SANITIZE_GCC:-}" ] || return 1
  opts=$(meson introspect --buildoptions "$SANITIZE_GCC" 2>/dev/null) || return 1
  python3 -c 'import json,sys; o={x["name"]: x["value"] for x in json.load(sys.stdin)}; sys.exit(o.get("werror") is not True)' <<<"$opts" || return 1
  grep -q "^C compiler for the host machine: .*(gcc " "$SANITIZE_GCC/meson-logs/meson-log.txt"
}
gcc_given || SANITIZE_GCC=

# ---- 1. warnings as errors, gcc and clang --------------------------------------------------
if ((do_build)) && in_part build; then
  compilers=(gcc)
  ((do_asan)) || compilers+=(clang)
  for cc in "${compilers[@]}"; do
    if [ "$cc" = gcc ] && [ -n "$SANITIZE_GCC" ]; then
      if ninja -C "$SANITIZE_GCC" >"$SANITIZE_GCC/sanitize-ninja.log" 2>&1; then say "gcc -Dwerror=true: clean ($SANITIZE_GCC)"
      else finding "gcc build with -Dwerror=true fails (log: $SANITIZE_GCC/sanitize-ninja.log)"; fi
      continue
    fi
    if setup "$prefix-$cc" "$cc" -Dwerror=true -Dbuildtype=debugoptimized; then
      say "$cc -Dwerror=true: clean"
    else
      finding "$cc build with -Dwerror=true fails (log: $prefix-$cc.build.log)"
    fi
  done
fi

# ---- 2. ASan + UBSan: unit suite and engine integration tests ------------------------------
asan=$prefix-asan
asan_opts=(-Dwerror=true -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
           -Dc_args=-fno-sanitize-recover=all -Dc_link_args=-fno-sanitize-recover=all)
asan_failed=0
if ((do_asan)) && in_part build; then
  if setup "$asan" clang "${asan_opts[@]}"; then
    ((do_build)) && say "clang -Dwerror=true (the ASan build): clean"
  else
    finding "ASan/UBSan build (clang -Dwerror=true) fails (log: $asan.build.log)"
    asan_failed=1
  fi
fi
# asan_run WHAT LOGBASE MESON-TEST-ARGS...: run tests of the ASan build; a failure or any
# sanitizer report is a finding.
asan_run() {
  local what=$1 logbase=$2 rc=0 logs reports
  shift 2
  logs=$(mktemp -d "${TMPDIR:-/tmp}/stillfs-sanitize.XXXXXX")
  chmod 1777 "$logs"   # some tests run stillctl as nobody
  # Smaller sizes: the same paths, a fraction of the time.
  ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1" \
  UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1" \
  ENGINE_TORTURE_SNAPSHOTS=6 REL_KILL_ROUNDS=4 REL_MUTATE_OBJECTS=60 \
  REL_SCALE_DIRS=10 SOAK_CYCLES=6 SOAK_SAMPLE=2 SOAK_RSS_MAX_KIB=1048576 \
  REL_MUTATE_BIG_MB=8 REL_OVERFLOW_BIG_MB=60 \
    meson test -C "$asan" --no-rebuild --print-errorlogs --logbase "$logbase" "$@" >"$logs/tests.out" 2>&1 || rc=$?
  # Each failing test's line is followed by its own output (--print-errorlogs).
  ((rc == 0)) || { sed -n '/^ *[0-9]*\/[0-9]* .* \(FAIL\|ERROR\|TIMEOUT\) /,/^Summary of Failures/p' \
                     "$logs/tests.out" | head -n 80 >&2 || true
                   finding "$what fail under ASan/UBSan (log: $asan/meson-logs/$logbase.txt)"; }
  reports=$(find "$logs" -name 'asan.*' -o -name 'ubsan.*' | head -20)
  if [ -n "$reports" ]; then
    for r in $reports; do head -n 30 "$r" >&2; done
    finding "sanitizer reports: $(echo "$reports" | wc -l) (kept in $logs)"
  elif ((rc == 0)); then
    say "ASan+UBSan: $what clean"
    rm -rf "$logs"
  fi
}
if ((do_asan && !asan_failed)) && { in_part heavy || in_part pool || in_part alone; }; then
  if ensure "$asan" clang "${asan_opts[@]}"; then
    # The engine's tests: engine-*, rel-*; those of suites heavy and alone run one at a time.
    engine_re='s/^.* \/ \(\(engine\|rel\)-[a-z0-9-]*\)$/\1/p'
    mapfile -t engine_tests < <(meson test -C "$asan" --list 2>/dev/null | sed -n "$engine_re")
    mapfile -t heavy_tests < <(meson test -C "$asan" --list --suite heavy 2>/dev/null | sed -n "$engine_re")
    mapfile -t alone_tests < <(meson test -C "$asan" --list --suite alone 2>/dev/null | sed -n "$engine_re")
    mapfile -t unit_tests < <(meson test -C "$asan" --list --suite unit 2>/dev/null | sed -n 's/^.* \/ //p')
    # Not under ASan: rel-killwriter, whose engine paths (a hot journal left by a killed writer)
    # engine-hotjournal runs under ASan in a second instead of its 25.
    asan_skip=" rel-killwriter "
    pool_tests=()
    for t in "${engine_tests[@]}"; do
      [[ " ${heavy_tests[*]} ${alone_tests[*]} " == *" $t "* || $asan_skip == *" $t "* ]] || pool_tests+=("$t")
    done
    ((${#engine_tests[@]})) || finding "no engine integration tests found in $asan"
    if in_part heavy && ((${#heavy_tests[@]})); then
      asan_run "${#heavy_tests[@]} engine tests of suite heavy (${heavy_tests[*]})" testlog-heavy "${heavy_tests[@]}"
    fi
    if in_part pool && ((${#engine_tests[@]})); then
      jobs=()
      [ -z "${SANITIZE_JOBS:-}" ] || jobs=(--num-processes "$SANITIZE_JOBS")
      asan_run "unit suite (${#unit_tests[@]}) + ${#pool_tests[@]} engine tests (${pool_tests[*]})" \
        testlog-pool "${jobs[@]}" "${unit_tests[@]}" "${pool_tests[@]}"
    fi
    if in_part alone && ((${#alone_tests[@]})); then
      asan_run "${#alone_tests[@]} engine tests of suite alone (${alone_tests[*]})" testlog-alone "${alone_tests[@]}"
    fi
  else
    finding "ASan/UBSan build (clang -Dwerror=true) fails (log: $asan.build.log)"
  fi
fi

# ---- 3. valgrind memcheck of stillctl snapshot + verify ------------------------------------
if ((do_valgrind)) && in_part pool; then
  vbuild=$(realpath -m "${SANITIZE_GCC:-$prefix-gcc}")
  [ -x "$vbuild/fs/ctl/stillctl" ] || setup "$vbuild" gcc -Dwerror=true -Dbuildtype=debugoptimized ||
    finding "cannot build $vbuild for valgrind"
  if [ -x "$vbuild/fs/ctl/stillctl" ] && command -v valgrind >/dev/null; then
    w=$(mktemp -d "${TMPDIR:-/tmp}/stillfs-valgrind.XXXXXX")
    live_pid=
    cleanup_vg() { [ -z "$live_pid" ] || kill "$live_pid" 2>/dev/null || true; rm -rf "$w"; }
    trap cleanup_vg EXIT
    s=$w/store
    mkdir -p "$s/a/b/c/d" "$s/seg" "$w/outside"
    echo "outside the store" >"$w/outside/secret"
    for i in $(seq 1 50); do echo "file $i" >"$s/a/b/c/d/f$i"; done
    head -c 3000000 /dev/urandom >"$s/seg/data_level0.bin"
    truncate -s 8G "$s/seg/link_lists.bin"
    printf 'data' | dd of="$s/seg/link_lists.bin" bs=4096 seek=100000 conv=notrunc status=none
    ln -s a/b "$s/rel-link"; ln -s "$w/outside" "$s/outdir"; ln -s ../outside/secret "$s/a/up"
    mkfifo "$s/a/fifo"
    sqlite3 "$s/chroma.sqlite3" 'create table t(x); insert into t values (1),(2),(3);'
    "$vbuild/tests/torture/torture" hotjournal "$s" >/dev/null      # hot.sqlite3 + hot journal
    sqlite3 "$s/cold.sqlite3" 'pragma journal_mode=wal; pragma wal_autocheckpoint=0; create table t(x); insert into t values (9);' \
      ".shell cp '$s/cold.sqlite3' '$w/c.keep'; cp '$s/cold.sqlite3-wal' '$w/c.keep-wal'" >/dev/null
    mv "$w/c.keep" "$s/cold.sqlite3"; mv "$w/c.keep-wal" "$s/cold.sqlite3-wal"
    sqlite3 "$s/live.sqlite3" 'pragma journal_mode=wal; create table t(x); insert into t values (7);' >/dev/null
    # A live WAL connection for the capture to pin: a shell that keeps it open. Its inserts
    # wait for locks (a connection of rows() closing last checkpoints under an exclusive
    # lock), and its errors are kept: an insert lost to SQLITE_BUSY is a finding, not a hang.
    mkfifo "$w/live.in"
    sqlite3 "$s/live.sqlite3" <"$w/live.in" >"$w/live.out" 2>&1 &
    live_pid=$!
    exec 9>"$w/live.in"
    echo '.timeout 30000' >&9
    rows() { sqlite3 -cmd '.timeout 30000' "$s/live.sqlite3" 'select count(*) from t'; }
    live_rows() {   # live_rows N: wait (60 s at most) until the live database holds N rows
      local deadline=$((SECONDS + 60))
      until [ "$(rows)" = "$1" ]; do
        ((SECONDS < deadline)) || { finding "valgrind setup: live.sqlite3 never held $1 rows: $(cat "$w/live.out")"; return 0; }
        sleep 0.05
      done
    }
    echo 'insert into t values (8);' >&9
    live_rows 2
    supp=$w/stillfs.supp
    cat >"$supp" <<'EOF'
{
   the copy hashing pool's threads live until exit, by design: their TLS is still held
   Memcheck:Leak
   match-leak-kinds: possible
   fun:calloc
   ...
   fun:allocate_dtv
   fun:_dl_allocate_tls
   ...
   fun:pthread_create*
   fun:cp_pool_init
}
EOF
    # vg NAME ARGS...: run stillctl under memcheck; errors, leaks or descriptors left open
    # (other than those inherited) are findings, and so is a non-zero exit.
    vg() {
      local name=$1 rc=0; shift
      valgrind --error-exitcode=1 --leak-check=full --track-fds=yes --suppressions="$supp" \
        --log-file="$w/vg.$name.log" "$vbuild/fs/ctl/stillctl" "$@" >"$w/out.$name" 2>&1 || rc=$?
      local leaked_fds
      leaked_fds=$(awk '/Open file descriptor/ {fd = $0; getline; if ($0 !~ /inherited from parent/) print fd}' "$w/vg.$name.log")
      if ((rc != 0)) || [ -n "$leaked_fds" ] || grep -q 'ERROR SUMMARY: [1-9]' "$w/vg.$name.log"; then
        grep -v 'syscall: 437\|README_MISSING\|Nevertheless we consider\|bug_reports.html\|write your own handler' \
          "$w/vg.$name.log" | tail -n 40 >&2
        cat "$w/out.$name" >&2
        finding "valgrind: stillctl $name (exit $rc${leaked_fds:+, descriptors left open})"
      else
        say "valgrind: stillctl $name clean ($(grep -o 'ERROR SUMMARY: [0-9]* errors' "$w/vg.$name.log"))"
      fi
    }
    vg snapshot snapshot "$s" "$w/snap1"
    echo 'insert into t values (10);' >&9
    live_rows 3
    echo "changed" >>"$s/a/b/c/d/f7"
    vg snapshot-previous snapshot --previous "$w/snap1" "$s" "$w/snap2"
    vg verify verify "$w/snap2"
    exec 9>&-
    wait "$live_pid" 2>/dev/null || true
    live_pid=
    # The captures themselves must be right, too.
    if [ -d "$w/snap2" ]; then
      [ -L "$w/snap2/outdir" ] && [ -L "$w/snap2/a/up" ] || finding "valgrind run: a symlink was not kept as a link"
      [ "$(sqlite3 "file:$w/snap2/live.sqlite3?immutable=1" 'select count(*) from t')" = 3 ] ||
        finding "valgrind run: live.sqlite3 does not hold its 3 committed rows"
      "$vbuild/tests/torture/torture" hotcheck "$w/snap2" >/dev/null || finding "valgrind run: hot.sqlite3 not at its committed state"
    fi
    # The hostile-symlink test with every stillctl under memcheck: valgrind has no openat2, so
    # this walks links to /etc/shadow, "..", loops and replaced directories through the
    # engine's fallback; any memcheck error makes stillctl exit 97 and the test fail.
    printf '#!/bin/sh\nexec valgrind -q --error-exitcode=97 --leak-check=full --suppressions=%s --log-file=%s/vgt.%%p.log %s "$@"\n' \
      "$supp" "$w" "$vbuild/fs/ctl/stillctl" >"$w/stillctl-vg"
    chmod 755 "$w/stillctl-vg"
    if STILLCTL=$w/stillctl-vg bash tests/integration/rel-symlinks.sh >"$w/out.symlinks" 2>&1 &&
       ! grep -l 'ERROR SUMMARY: [1-9]\|definitely lost\|Invalid \|uninitialised' "$w"/vgt.*.log >/dev/null 2>&1; then
      say "valgrind: rel-symlinks.sh under memcheck clean ($(ls "$w"/vgt.*.log | wc -l) stillctl runs)"
    else
      tail -n 20 "$w/out.symlinks" >&2
      grep -h -A15 'ERROR SUMMARY: [1-9]\|definitely lost\|Invalid \|uninitialised' "$w"/vgt.*.log 2>/dev/null | head -60 >&2 || true
      finding "valgrind: rel-symlinks.sh under memcheck"
    fi
    cleanup_vg; trap - EXIT
  else
    finding "valgrind is not installed (scripts/setup.sh installs it)"
  fi
fi

if ((${#findings[@]})); then
  say "${#findings[@]} finding(s) in $((SECONDS - t_start)) s:"
  printf '  - %s\n' "${findings[@]}" >&2
  exit 1
fi
ran=()
((do_build)) && in_part build && ran+=("gcc/clang -Werror")
((do_asan)) && { in_part heavy || in_part pool || in_part alone; } && ran+=("ASan+UBSan")
((do_valgrind)) && in_part pool && ran+=("valgrind")
part_said=
[ "$part" = all ] || part_said=" --part=$part:"
say "clean:$part_said ${ran[*]} ($((SECONDS - t_start)) s)"
