#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Negative control for the torture checker: copies of a live store that are NOT one instant must
# be caught.  A plain `cp -r` and per-file backups (sqlite3 .backup of each database, cp of the
# rest) both read the files at different moments; if the checker let every one of them through,
# a stillfs snapshot passing it would prove nothing.  The copy of the stopped store at the end is
# the matching positive control: the checker must not flag a quiescent store either.
#
# Each control stops at its first copy the checker catches; one caught in TORTURE_TRIES is what
# the claim needs.
# env: STILLCTL (required by lib.sh), TORTURE = torture binary, TORTURE_TRIES (default 30).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${TORTURE:?TORTURE must point to the torture binary}"
if ! command -v sqlite3 >/dev/null; then
  t_log "SKIP: the sqlite3 command-line shell is not installed"
  exit 77
fi

tries=${TORTURE_TRIES:-30}
store=$T_WORK/store
"$TORTURE" init "$store" >/dev/null

t_bg "$TORTURE" write "$store" >"$T_WORK/writer.out" 2>&1
writer=$!

writer_alive() {
  kill -0 "$writer" 2>/dev/null || t_fail "the writer died: $(cat "$T_WORK/writer.out")"
}

# Start copying only once the writer has persisted a few times, so that every invariant
# (counters, persist order, torn segment files) is in play.
persisted_enough() {
  writer_alive
  local p
  p=$(sqlite3 -readonly -cmd '.timeout 2000' "$store/chroma.sqlite3" \
        'SELECT coalesce(max(seq), 0) FROM max_seq_id' 2>/dev/null) && ((p >= 1000))
}
t_wait_for 60 persisted_enough

# judge DIR: returns 0 when the checker passes DIR, 1 when it catches a violation; the checker
# failing to run at all (exit 2/3, crash) fails the test, it must never count as a catch.
judge() {
  local rc=0
  "$TORTURE" check "$1" >"$1.verdict" 2>&1 || rc=$?
  case $rc in
    0 | 1) return "$rc" ;;
    *) t_fail "the checker could not judge $1 (exit $rc): $(cat "$1.verdict")" ;;
  esac
}

# report NAME CAUGHT TRIES FIRST_VERDICT
report() {
  echo "# $1: the checker caught $2 of $3 copies (it stops at the first caught)"
  [[ -z $4 ]] || head -n 5 "$4" | sed "s/^/#   /" >&2
  (($2 > 0)) || t_fail "$1: the checker never caught a copy of the live store"
}

caught=0 done_tries=0 first=
for ((i = 1; i <= tries; i++)); do
  writer_alive
  copy=$T_WORK/cp$i
  # cp complains when the rollback journal vanishes under it: part of the race being shown
  cp -r "$store" "$copy" 2>/dev/null || true
  done_tries=$((done_tries + 1))
  if ! judge "$copy"; then
    caught=$((caught + 1))
    first=$T_WORK/caught.cp.verdict
    mv "$copy.verdict" "$first"
    rm -rf "$copy"
    break
  fi
  rm -rf "$copy"
done
report "cp -r" "$caught" "$done_tries" "$first"

# Each database on its own is backed up consistently, but not at the same instant as the
# other database or the segment files.
perfile_copy() {
  local src=$1 dst=$2 e name
  mkdir "$dst"
  for e in "$src"/*; do
    name=${e##*/}
    case $name in
      *-journal | *-wal | *-shm) ;;   # .backup reads through SQLite, which honours these
      *.sqlite3)
        timeout 20 sqlite3 -readonly -cmd '.timeout 10000' "$e" ".backup '$dst/$name'" || return 1 ;;
      *) cp -r "$e" "$dst/" ;;
    esac
  done
}

caught=0 done_tries=0 first=
for ((i = 1; i <= tries; i++)); do
  writer_alive
  copy=$T_WORK/pf$i
  if ! perfile_copy "$store" "$copy"; then
    t_log "per-file backup $i failed; not counted"
    rm -rf "$copy"
    continue
  fi
  done_tries=$((done_tries + 1))
  if ! judge "$copy"; then
    caught=$((caught + 1))
    first=$T_WORK/caught.pf.verdict
    mv "$copy.verdict" "$first"
    rm -rf "$copy"
    break
  fi
  rm -rf "$copy"
done
report "per-file backup" "$caught" "$done_tries" "$first"

writer_alive
kill -TERM "$writer"
writer_gone() { ! kill -0 "$writer" 2>/dev/null; }
t_wait_for 30 writer_gone
rc=0
wait "$writer" || rc=$?
# reaped: keep lib.sh's cleanup from signalling a recycled pid
remaining=()
for p in "${T_PIDS[@]}"; do [[ $p == "$writer" ]] || remaining+=("$p"); done
T_PIDS=("${remaining[@]}")
((rc == 0)) || t_fail "the writer exited with status $rc after SIGTERM: $(cat "$T_WORK/writer.out")"
grep -Eq '^torture: [0-9]+ records, [0-9]+ persists, [0-9]+ commits$' "$T_WORK/writer.out" ||
  t_fail "the writer did not report its work: $(cat "$T_WORK/writer.out")"
sed 's/^/# writer: /' "$T_WORK/writer.out" >&2

# Positive control: with the writer stopped, a plain copy is one instant and must pass.
cp -r "$store" "$T_WORK/quiet"
judge "$T_WORK/quiet" ||
  t_fail "the checker flagged a copy of the stopped store: $(cat "$T_WORK/quiet.verdict")"
echo "# quiescent copy: $(cat "$T_WORK/quiet.verdict")"
echo "ok: the checker catches naive copies of a live store and passes a quiescent one"
