#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A rollback-mode database that a writer commits to all the time is compared with its early
# copy under its lock at every snapshot. Both files are mapped in before the lock is taken, so
# that the compare takes no page fault while the writer waits: the summary line's "compares
# ... ms CPU, N faults" of the longest hold. Without the premap, a 64 MiB database and its copy
# take a fault every few pages (about 2,000 here); the premapped compare takes a handful.
source "$(dirname "$0")/lib.sh"
# AddressSanitizer's memcmp reads shadow memory as well, which faults in as the compare goes.
if grep -q __asan_init "$STILLCTL"; then echo "SKIP: stillctl built with AddressSanitizer" >&2; exit 77; fi
store=$T_WORK/store; mkdir -p "$store"
sqlite3 "$store/db.sqlite3" "pragma page_size=4096; create table t(k integer primary key, v blob);
  with recursive n(i) as (select 1 union all select i + 1 from n where i < 20000)
  insert into t select i, randomblob(3000) from n;"
# Where the copy can be a clone of the live file, nothing is compared under the lock.
cp --reflink=always "$store/db.sqlite3" "$T_WORK/probe" 2>/dev/null &&
  { echo "SKIP: $(findmnt -n -o FSTYPE -T "$T_WORK") clones: no compare under the lock" >&2; exit 77; }
rm -f "$T_WORK/probe"

cat >"$T_WORK/writer.py" <<'PY'
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
k = 0
while not os.path.exists(sys.argv[2]):
    k += 1
    db.execute("update t set v = randomblob(3000) where k = ?", (k % 20000 + 1,))
PY
t_bg python3 "$T_WORK/writer.py" "$store/db.sqlite3" "$T_WORK/stop"
"$STILLCTL" snapshot -q "$store" "$T_WORK/s0"
prev=$T_WORK/s0 compared=0
for i in 1 2 3 4 5 6; do
  "$STILLCTL" snapshot --recycle "$prev" "$store" "$T_WORK/s$i" 2>"$T_WORK/s$i.log" ||
    t_fail "snapshot $i failed: $(cat "$T_WORK/s$i.log")"
  rm -rf "$prev"; prev=$T_WORK/s$i
  line=$(grep -o 'longest lock [0-9.]* ms (compares [0-9.]* ms CPU, [0-9]* faults)' "$T_WORK/s$i.log") ||
    t_fail "no hold in the summary line: $(cat "$T_WORK/s$i.log")"
  t_log "snapshot $i: $line"
  read -r cpu faults <<<"$(awk '{print $6, $9}' <<<"$line")"
  awk "BEGIN{exit !($cpu > 0)}" || continue
  compared=$((compared + 1))
  [ "$faults" -lt 200 ] || t_fail "snapshot $i: the compare under the lock took $faults page faults"
done
touch "$T_WORK/stop"
"$STILLCTL" verify "$prev" >/dev/null || t_fail "the last snapshot does not verify"
[ "$compared" -ge 1 ] || t_fail "no snapshot compared the database under its lock"
echo "# $compared of 6 snapshots compared the database under its lock, each with few faults"
