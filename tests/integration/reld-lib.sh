# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers for the daemon reliability tests (tests/integration/reld-*.sh), sourced after lib.sh.
# Not a test itself: meson.build registers only the scripts that run.
# (The tests mount with -o auto_unmount: a daemon that dies, or is killed by the cleanup,
# leaves no dead mount behind.)

# reld_trace PID LOG: trace the daemon PID (all its threads, and the helpers it starts) with
# strace -f -y into LOG, and wait until every thread is traced. The tracer is stopped before
# lib.sh's cleanup runs: a tracer killed together with its tracee can swallow the SIGTERM that
# would have made the daemon unmount.
RELD_TRACER=
reld_trace() {
  local pid=$1 log=$2
  strace -f -y -qq -s 0 -o "$log" -e trace=%file,%desc -p "$pid" 2>"$log.err" &
  RELD_TRACER=$!
  reld_traced() {
    local t
    kill -0 "$RELD_TRACER" 2>/dev/null || t_fail "strace exited: $(cat "$log.err")"
    for t in /proc/"$pid"/task/*; do
      [ "$(awk '/^TracerPid:/ { print $2 }' "$t/status" 2>/dev/null)" = "$RELD_TRACER" ] || return 1
    done
  }
  t_wait_for 20 reld_traced
}
reld_untrace() {
  [ -n "$RELD_TRACER" ] || return 0
  kill -INT "$RELD_TRACER" 2>/dev/null || true
  wait "$RELD_TRACER" 2>/dev/null || true
  RELD_TRACER=
}
trap 'reld_rc=$?; set +e; reld_untrace; (exit "$reld_rc"); t_cleanup' EXIT

# reld_forget PID...: these processes have ended (and were waited for): the cleanup must not
# signal their numbers, which may belong to someone else by then.
reld_forget() {
  local p q keep=()
  for p in "${T_PIDS[@]}"; do
    for q in "$@"; do [ "$p" = "$q" ] && continue 2; done
    keep+=("$p")
  done
  T_PIDS=("${keep[@]}")
}

# reld_verify DIR WHAT: stillctl verify must pass.
reld_verify() {
  "$STILLCTL" verify "$1" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "$2: stillctl verify $1 failed"; }
}

# reld_gens CACHE: the generation directories in CACHE, on one line.
reld_gens() { find "$1" -mindepth 1 -maxdepth 1 -name 'gen-*' -printf '%f\n' | sort | tr '\n' ' '; }

# reld_user_py SCRIPT NAME ARGS...: run python SCRIPT NAME ARGS... as the test's $user
# (t_attacker) in the background, its output in $T_WORK/NAME.out; wait until it prints
# "ready". Sets $upid, which the cleanup kills.
reld_user_py() {
  local script=$1 name=$2
  shift 2
  setpriv --reuid "$user" --regid "$user" --init-groups -- \
    /usr/bin/python3 "$script" "$name" "$@" >"$T_WORK/$name.out" 2>&1 &
  upid=$!
  T_PIDS+=("$upid")
  t_wait_for 20 grep -q ready "$T_WORK/$name.out"
}

# reld_asked PID...: each has been answered (has exited), or waits in the kernel for the
# daemon's answer to a request.
reld_asked() {
  local p
  for p in "$@"; do
    [ ! -e "/proc/$p" ] || grep -q request_wait_answer "/proc/$p/stack" 2>/dev/null || return 1
  done
}
