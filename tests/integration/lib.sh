# Shared helpers for stillfs integration tests (sourced, bash).
# Every test gets a private work dir and a cleanup trap that kills what it started and
# unmounts what it mounted, whatever way the test ends.
set -euo pipefail

: "${STILLCTL:?STILLCTL must point to the stillctl binary}"
T_WORK=$(mktemp -d "${TMPDIR:-/tmp}/stillfs-test.XXXXXX")
T_PIDS=()
T_MOUNTS=()

t_cleanup() {
  local rc=$? p m
  for p in "${T_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${T_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for m in "${T_MOUNTS[@]}"; do
    if mountpoint -q "$m" 2>/dev/null; then fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
  done
  rm -rf "$T_WORK" 2>/dev/null || true
  exit "$rc"
}
trap t_cleanup EXIT
trap 'exit 130' INT TERM

t_fail() { echo "FAIL: $*" >&2; exit 1; }
t_log() { echo "# $*" >&2; }

# t_bg CMD...: start CMD in the background and remember it for cleanup.
t_bg() { "$@" & T_PIDS+=("$!"); }

# t_wait_for SECONDS CMD...: poll until CMD succeeds; fail the test when time runs out.
t_wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || t_fail "timed out after ${limit}s waiting for: $*"
    sleep 0.05
  done
}
