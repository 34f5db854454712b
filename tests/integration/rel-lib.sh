# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers for the reliability tests (tests/integration/rel-*.sh), sourced after lib.sh.
# Not a test itself: meson.build registers only the scripts that run.

# r_live_state DIR: everything about DIR that stillfs must never change — every entry's
# type, inode, link count, mode, owner, size, mtime and ctime (nanoseconds), symlink target,
# and the SHA-256 of every regular file. Access times are left out: reading moves them.
# Records are NUL-terminated so that any byte may appear in a name.
r_live_state() {
  (cd "$1" && find . -printf '%p\t%y\t%i\t%n\t%m\t%U\t%G\t%s\t%T@\t%C@\t%l\0' | LC_ALL=C sort -z &&
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
}

# r_tree DIR [SKIP_ERE]: what a snapshot must reproduce of DIR: type, mode, owner, size (not
# for directories), symlink target and content digest of every entry, the manifest left out.
# Files whose path (./...) matches SKIP_ERE have no digest (WAL databases: their snapshot copy
# differs in the format bytes); the caller checks their content some other way.
r_tree() {
  (cd "$1" &&
    find . -path ./.stillfs-manifest -prune -o -type d -printf '%p\t%y\t%m\t%U\t%G\0' \
      -o -printf '%p\t%y\t%m\t%U\t%G\t%s\t%l\0' | LC_ALL=C sort -z &&
    find . -path ./.stillfs-manifest -prune -o -type f -print0 | LC_ALL=C sort -z |
      { if [ -n "${2:-}" ]; then grep -azEv -- "$2"; else cat; fi; } | xargs -0r sha256sum)
}

# r_same_tree A B WHAT [SKIP_ERE]: fail unless r_tree of A and B are equal; shows differences.
r_same_tree() {
  if ! cmp -s <(r_tree "$1" "${4:-}") <(r_tree "$2" "${4:-}"); then
    diff <(r_tree "$1" "${4:-}" | tr '\0' '\n') <(r_tree "$2" "${4:-}" | tr '\0' '\n') | head -20 >&2 || true
    t_fail "$3"
  fi
}

# r_staging PARENT: succeeds once a stillctl snapshot has started building inside PARENT.
r_staging() { compgen -G "$1/.*.stillfs-tmp.*" >/dev/null; }

# r_no_leftovers DIR: no staging or work directory of a capture is left in DIR.
r_no_leftovers() {
  local left
  left=$(find "$1" -maxdepth 1 -name '.*.stillfs-*' -printf '%f ' 2>/dev/null)
  [ -z "$left" ] || t_fail "capture leftovers in $1: $left"
}

# r_alive PID: the process runs (a zombie that bash has not reaped yet does not count; kill -0
# alone would say it is alive).
r_alive() {
  local st=
  { read -r _ _ st _ <"/proc/$1/stat"; } 2>/dev/null && [ "$st" != Z ]
}

# r_verify DIR: stillctl verify must pass; prints its report on failure.
r_verify() {
  "$STILLCTL" verify "$1" >"$T_WORK/verify.out" 2>&1 ||
    { cat "$T_WORK/verify.out" >&2; t_fail "stillctl verify $1 failed"; }
}

# r_timed OUTFILE CMD...: run CMD under GNU time; OUTFILE gets "seconds max_rss_kib".
r_timed() {
  local out=$1 rc=0; shift
  /usr/bin/time -f '%e %M' -o "$out" "$@" || rc=$?
  return "$rc"
}
