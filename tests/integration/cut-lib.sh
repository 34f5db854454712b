# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
# Shared steps of the cut-*.sh tests (sourced after lib.sh): one adversarial writer
# (tests/torture/adversary.c) per way a quiet window has been fooled, a negative control that
# shows the writer and its checker can tear a copy, then consecutive captures that must each be
# published and one instant, or refused cleanly.
#
# env: ADVERSARY = adversary binary; CUT_CAPTURES (10) captures per test; CUT_TRIES (60) naive
# copies at most in the negative control; CUT_WRITER_OPTS: more `adversary run` options (such
# as --idle-ms 2000 for an engine whose quiet window is longer than the writer's idle time).
#
# Why 10 captures: the engine these writers were made against tore 10 to 20 of 20 captures per
# class (docs/RELIABILITY.md), so a capture of it is torn with probability p >= 0.5 (the class
# seen at 10/20), and all 10 captures pass it with probability (1 - p)^10 <= 0.5^10 = 9.8e-4.
# The other classes (13 to 20 of 20) give <= 0.35^10 = 2.8e-5. Each capture costs about 2 s
# (it has to wait for the writer's idle gap), so 20 cost the suite about 160 s more for that.
: "${ADVERSARY:?ADVERSARY must point to the adversary binary}"
CUT_CAPTURES=${CUT_CAPTURES:-10}
CUT_TRIES=${CUT_TRIES:-60}
CUT_STORE=$T_WORK/store
CUT_OUT=$T_WORK/writer.out

# cut_start MODE [adversary run options...]: start the writer on a fresh store, wait until it
# has persisted once.
cut_start() {
  CUT_MODE=$1
  shift
  CUT_ON_READ=0
  [[ " $* " != *" --on-read "* ]] || CUT_ON_READ=1
  # shellcheck disable=SC2086 # CUT_WRITER_OPTS is words on purpose
  t_bg "$ADVERSARY" run --mode "$CUT_MODE" "$@" ${CUT_WRITER_OPTS:-} "$CUT_STORE" >"$CUT_OUT" 2>&1
  CUT_WRITER=$!
  t_wait_for 30 cut_ready
  t_log "$(grep '^adversary: ready' "$CUT_OUT")"
}
cut_alive() { kill -0 "$CUT_WRITER" 2>/dev/null || t_fail "the writer died: $(cat "$CUT_OUT")"; }
cut_ready() { cut_alive; grep -q '^adversary: ready' "$CUT_OUT"; }
# A writer started with --on-read prints "burst N" when a reader sets it off and "armed N" once
# its cool-down is over: each capture starts armed, so that it meets a burst of its own.
cut_armed() { cut_alive; ((CUT_ON_READ == 0)) || tail -n 1 "$CUT_OUT" | grep -q '^armed '; }
cut_bursting() {
  cut_alive
  if tail -n 1 "$CUT_OUT" | grep -q '^armed '; then
    cat "$CUT_STORE"/*/header.bin >/dev/null
    return 1
  fi
  tail -n 1 "$CUT_OUT" | grep -q '^burst '
}
cut_bursts() { grep -c '^burst ' "$CUT_OUT" || true; }

# cut_judge DIR: 0 if the checker passes DIR, 1 if it finds it torn (verdict in DIR.verdict);
# a checker that cannot run fails the test, it never counts as a verdict.
cut_judge() {
  local rc=0
  "$ADVERSARY" check --mode "$CUT_MODE" "$1" >"$1.verdict" 2>&1 || rc=$?
  case $rc in
    0 | 1) return "$rc" ;;
    *) t_fail "the checker could not judge $1 (exit $rc): $(cat "$1.verdict")" ;;
  esac
}

# cut_copy_files SRC DST: a naive copy one file at a time, a process each, as a backup script
# does; it copies the two names of a hard link as two files.
cut_copy_files() {
  local f
  mkdir "$2"
  (cd "$1" && find . -type f) | while read -r f; do
    mkdir -p "$2/${f%/*}"
    cp "$1/$f" "$2/$f" 2>/dev/null || true   # a rollback journal may vanish under it
  done
}

# cut_negative CLASS COPY_CMD...: naive copies of the live store (COPY_CMD SRC DST) until the
# checker calls one torn; failing that within CUT_TRIES copies, the test proves nothing, and
# fails.
cut_negative() {
  local class=$1 i dst=$T_WORK/naive
  shift
  for ((i = 1; i <= CUT_TRIES; i++)); do
    cut_alive
    # copies made while the writer idles cannot tear: a writer waiting for readers is set off
    ((CUT_ON_READ == 0)) || t_wait_for 30 cut_bursting
    # cp complains when the rollback journal vanishes under it: part of the race shown
    "$@" "$CUT_STORE" "$dst" 2>/dev/null || true
    if ! cut_judge "$dst"; then
      echo "# class $class negative control: naive copy $i ($*) torn: $(cat "$dst.verdict")"
      rm -rf "$dst" "$dst.verdict"
      return 0
    fi
    rm -rf "$dst" "$dst.verdict"
  done
  t_fail "class $class negative control: none of $CUT_TRIES naive copies ($*) was torn; the" \
    "writer or the checker cannot tear, so the captures below would prove nothing"
}

# cut_held MS: remember the longest time a capture held the databases (CUT_HELD_MAX, in ms).
CUT_HELD_MAX=0
cut_held() {
  local ms=${1%.*}
  [ -n "$ms" ] || t_fail "no database hold reported"
  ((ms <= CUT_HELD_MAX)) || CUT_HELD_MAX=$ms
}

# cut_captures CLASS [stillctl snapshot options...]: CUT_CAPTURES consecutive captures of the
# live store. Each is published (exit 0) and then must pass the checker and stillctl verify, or
# is refused cleanly (exit 3, nothing at DEST). At least 80% must be published, and no capture
# may hold the databases longer than CUT_HOLD_MAX_MS (250 ms).
cut_captures() {
  local class=$1 i rc dest published=0 torn=0 refused=0 unverified=0 bursts0
  shift
  bursts0=$(cut_bursts)
  for ((i = 1; i <= CUT_CAPTURES; i++)); do
    t_wait_for 30 cut_armed
    dest=$T_WORK/snap$i
    rc=0
    "$STILLCTL" snapshot -q "$@" "$CUT_STORE" "$dest" 2>"$T_WORK/snap.err" || rc=$?
    case $rc in
      0)
        published=$((published + 1))
        cut_held "$(awk '$1 == "lock_max_s" { printf "%.0f", $2 * 1000 }' "$dest/.stillfs-manifest")"
        if ! cut_judge "$dest"; then
          torn=$((torn + 1))
          echo "# class $class capture $i: published but TORN: $(cat "$dest.verdict")" >&2
        fi
        if ! "$STILLCTL" verify "$dest" >"$T_WORK/verify.out" 2>&1; then
          unverified=$((unverified + 1))
          echo "# class $class capture $i: stillctl verify failed: $(head -n 3 "$T_WORK/verify.out" | tr '\n' ' ')" >&2
        fi
        ;;
      3)
        [ ! -e "$dest" ] || t_fail "class $class capture $i: exit 3 but $dest exists"
        refused=$((refused + 1))
        cut_held "$(sed -n 's/.*databases held \([0-9]*\) ms at most.*/\1/p' "$T_WORK/snap.err" | tail -n 1)"
        echo "# class $class capture $i: no consistent cut (exit 3): $(tail -n 1 "$T_WORK/snap.err")" >&2
        ;;
      *) t_fail "class $class capture $i: stillctl snapshot exited $rc: $(cat "$T_WORK/snap.err")" ;;
    esac
    rm -rf "$dest" "$dest.verdict"
  done
  echo "class $class: captures $CUT_CAPTURES, published $published, torn $torn, databases held $CUT_HELD_MAX ms at most"
  if ((CUT_ON_READ)); then
    local set_off=$(($(cut_bursts) - bursts0))
    t_log "class $class: $set_off of $CUT_CAPTURES captures set off a burst of the writer"
    ((set_off * 2 >= CUT_CAPTURES)) ||
      t_fail "class $class: only $set_off captures met a burst of the writer: not adversarial"
  fi
  ((torn == 0)) || t_fail "class $class: $torn of $published published captures are torn (above)"
  ((CUT_HELD_MAX <= ${CUT_HOLD_MAX_MS:-250})) ||
    t_fail "class $class: a capture held the databases $CUT_HELD_MAX ms (at most ${CUT_HOLD_MAX_MS:-250} allowed)"
  ((unverified == 0)) || t_fail "class $class: $unverified published captures fail stillctl verify"
  ((published * 5 >= CUT_CAPTURES * 4)) ||
    t_fail "class $class: only $published of $CUT_CAPTURES captures published (80% needed)"
  return 0
}

# cut_stop: stop the writer, check it ends cleanly, and that a copy of the store at rest passes
# the checker (the checker does not call everything torn), but not with a file of the group
# emptied or missing.
cut_stop() {
  cut_alive
  kill -TERM "$CUT_WRITER"
  local rc=0 p remaining=()
  wait "$CUT_WRITER" || rc=$?
  # reaped: keep lib.sh's cleanup from signalling a recycled pid
  for p in "${T_PIDS[@]}"; do [[ $p == "$CUT_WRITER" ]] || remaining+=("$p"); done
  T_PIDS=("${remaining[@]}")
  ((rc == 0)) || t_fail "the writer exited with status $rc: $(cat "$CUT_OUT")"
  t_log "$(tail -n 1 "$CUT_OUT")"
  cp -a "$CUT_STORE" "$T_WORK/rest"
  cut_judge "$T_WORK/rest" || t_fail "the checker calls the store at rest torn: $(cat "$T_WORK/rest.verdict")"
  local f
  for f in "$T_WORK"/rest/*/index_metadata.pickle "$T_WORK"/rest/*/data_level0.bin; do
    cp "$f" "$f.saved"
    : >"$f"
    ! cut_judge "$T_WORK/rest" || t_fail "the checker passes the store with ${f##*/} empty"
    rm "$f"
    ! cut_judge "$T_WORK/rest" || t_fail "the checker passes the store without ${f##*/}"
    mv "$f.saved" "$f"
  done
  cut_judge "$T_WORK/rest" || t_fail "the store at rest no longer passes: $(cat "$T_WORK/rest.verdict")"
}

# cut_class CLASS MODE NAIVE_COPY [adversary run options...] [-- snapshot options...]:
# the whole test for one class.
cut_class() {
  local class=$1 mode=$2 naive=$3 run=() snap=()
  shift 3
  while (($#)) && [[ $1 != -- ]]; do run+=("$1"); shift; done
  (($#)) && shift
  snap=("$@")
  cut_start "$mode" "${run[@]}"
  # shellcheck disable=SC2086 # the naive copy command is words on purpose
  cut_negative "$class" $naive
  cut_captures "$class" "${snap[@]}"
  cut_stop
}
