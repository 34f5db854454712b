#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Writer killed with SIGKILL at a random point: `torture write` (a rollback-journal database,
# a WAL database and segment files rewritten in place) is killed mid-run, several times, and
# each time the dead store is snapshotted. Every snapshot must
# - hold the last committed state of each database: its SQL dump equals that of a copy of the
#   dead store that SQLite itself recovered (hot journal rolled back, WAL replayed);
# - hold the other files byte for byte (the store is quiet once the writer is dead);
# - pass `torture check --strict` whenever the dead store itself is consistent (a kill in the
#   middle of a segment persist leaves a torn store: then the snapshot must show the same
#   violations as the store, no more);
# - pass stillctl verify;
# and the live store must be byte-for-byte and stat-for-stat untouched by stillctl (the -wal,
# -shm and -journal the dead writer left included).
# env: REL_KILL_ROUNDS (default 10).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
: "${TORTURE:?}"
rounds=${REL_KILL_ROUNDS:-10}
store=$T_WORK/store
"$TORTURE" init "$store" >/dev/null

counter() { sqlite3 -readonly -cmd '.timeout 5000' "$store/chroma.sqlite3" 'select n from counter where id = 1' 2>/dev/null; }
reached() { local n; n=$(counter) && [ -n "$n" ] && ((n >= $1)); }
# Dump of what SQLite considers committed in a database, as a digest.
dump() { sqlite3 "$1" .dump | sha256sum | cut -d' ' -f1; }

hot=0 torn=0 wal_left=0 prev=() base=0
for r in $(seq 1 "$rounds"); do
  "$TORTURE" write "$store" >"$T_WORK/writer.out" 2>&1 &
  writer=$!
  T_PIDS+=("$writer")
  # A random point: a few to a few hundred commits in, wherever the writer then is.
  t_wait_for 60 reached $((base + 5 + RANDOM % 400))
  kill -KILL "$writer"
  wait "$writer" 2>/dev/null || true
  T_PIDS=()
  [ -s "$store/chroma.sqlite3-journal" ] && hot=$((hot + 1))
  [ -e "$store/wal.sqlite3-wal" ] && wal_left=$((wal_left + 1))

  before=$(r_live_state "$store" | sha256sum)
  r_live_state "$store" >"$T_WORK/before.state"
  snap=$T_WORK/snap$r
  "$STILLCTL" snapshot -q "${prev[@]}" "$store" "$snap" 2>"$T_WORK/snap.err" ||
    { cat "$T_WORK/snap.err" >&2; t_fail "round $r: snapshot of the dead store failed"; }
  if [ "$before" != "$(r_live_state "$store" | sha256sum)" ]; then
    diff <(tr '\0' '\n' <"$T_WORK/before.state") <(r_live_state "$store" | tr '\0' '\n') >&2 || true
    t_fail "round $r: stillctl changed the live store"
  fi

  # What SQLite itself recovers from a copy of the dead store is the last committed state.
  rm -rf "$T_WORK/rec"; cp -a "$store" "$T_WORK/rec"
  for db in chroma.sqlite3 wal.sqlite3; do
    [ "$(dump "$snap/$db")" = "$(dump "$T_WORK/rec/$db")" ] ||
      t_fail "round $r: $db in the snapshot is not the last committed state"
    for s in -journal -wal -shm; do [ ! -e "$snap/$db$s" ] || t_fail "round $r: $db$s in the snapshot"; done
  done
  # Every other file byte for byte.
  diff -r --no-dereference -x '*.sqlite3*' -x .stillfs-manifest "$store" "$snap" >&2 ||
    t_fail "round $r: the snapshot's plain files differ from the dead store"
  r_verify "$snap"

  rc=0; "$TORTURE" check "$T_WORK/rec" >"$T_WORK/store.verdict" 2>&1 || rc=$?
  ((rc <= 1)) || t_fail "round $r: the checker could not judge the dead store: $(cat "$T_WORK/store.verdict")"
  if ((rc == 0)); then
    "$TORTURE" check --strict "$snap" >"$T_WORK/snap.verdict" 2>&1 ||
      { cat "$T_WORK/snap.verdict" >&2; t_fail "round $r: the snapshot of a consistent dead store fails the checker"; }
  else
    # Killed mid-persist: the store itself is torn; the snapshot must be torn the same way.
    torn=$((torn + 1))
    "$TORTURE" check "$snap" >"$T_WORK/snap.verdict" 2>&1 || true
    diff "$T_WORK/store.verdict" "$T_WORK/snap.verdict" >&2 ||
      t_fail "round $r: the snapshot is judged differently from the dead store"
  fi
  base=$(sqlite3 "file:$snap/chroma.sqlite3?immutable=1" 'select n from counter where id = 1')
  prev=(--previous "$snap")
  [ "$r" -gt 2 ] && rm -rf "$T_WORK/snap$((r - 2))"
done
echo "# $rounds kills: $hot left a hot journal, $wal_left a WAL with its -shm, $torn landed mid-persist; every snapshot held the last committed state, the store was untouched"
