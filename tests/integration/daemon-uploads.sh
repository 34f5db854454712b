#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The mtime rule in the daemon: a file that changed gets an mtime in a later whole second than
# any upload of an earlier generation (aws s3 sync keeps a file whose mtime is not newer than
# its object's upload time). An upload still reading a generation, holding a handle on it,
# is such an upload even when it opened everything seconds ago: a generation taken meanwhile
# (stillctl refresh) must not date its changes in the second of that read.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
head -c 4096 /dev/urandom >"$store/f"
t_mount "$store" "$mnt"
early_after() { local n; n=$(date +%s.%N); (( ${n%.*} > $1 )) && [ "${n#*.}" \< 2 ]; }
for round in 1 2; do
  exec 3<"$mnt/.snapshot/f"            # the upload opens the file ...
  opened=$(date +%s)
  t_wait_for 5 early_after "$opened"
  head -c 4096 /dev/urandom >"$store/f"  # same size
  cat <&3 >/dev/null                    # ... and reads it a second later, still open
  read_at=$(date +%s)
  "$STILLCTL" refresh "$mnt" >/dev/null || t_fail "stillctl refresh failed"
  exec 3<&-
  m=$(stat -c %Y "$mnt/.snapshot/f")
  cmp -s "$store/f" "$mnt/.snapshot/f" || t_fail "round $round: the new generation does not hold the changed f"
  (( m > read_at )) || t_fail "round $round: f changed and was read through a handle in second $read_at, yet the new generation dates it $m: s3 sync would skip it"
done
echo ok
