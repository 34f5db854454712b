#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# refl-swapext through the daemon, while it reads the store through its mount: an application
# keeps an SQLite WAL database open through the mount (no passthrough), so its -shm lives in
# the mount's page cache and the capture helper reads every file through the mount, where
# FUSE has no extent maps. An unprivileged writer swaps a group of files f00..f19 on XFS to
# generation 2 with XFS_IOC_SWAPEXT (no mtime, no ctime, no event), starting with the first
# one the capture has read. The generation `.snapshot` serves must verify and must not hold
# that first file at generation 1 beside files at 2.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?STILLFS must point to the stillfs binary}"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }
N=20
x=$T_WORK/xfs mnt=$T_WORK/mnt
t_xfs "$x"
S=$x/store D=$x/donors
mkdir -p "$S" "$D" "$x/cache" "$mnt"
chmod 711 "$T_WORK"
# the writer runs as another user, who may not reach the source tree
cp "$(dirname "${BASH_SOURCE[0]}")/swapext.py" "$T_WORK/"
chown 65534:65534 "$S" "$D"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/swapext.py" "$S" "$D" "$N" "$D/ready" >"$T_WORK/first" 2>"$T_WORK/swapper.err" &
T_PIDS+=("$!")
writer=$!
t_wait_for 60 test -e "$D/ready"

t_mount "$S" "$mnt" -o no_passthrough,cache="$x/cache",snapshot_max_age=3600
python3 - "$mnt/wal.db" >"$T_WORK/app.out" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma journal_mode=wal"); c.execute("create table if not exists t(x)")
c.execute("insert into t values (1)")
print("open", flush=True); time.sleep(3600)
PY
T_PIDS+=("$!")
app_open() { grep -q open "$T_WORK/app.out"; }
t_wait_for 20 app_open

ls "$mnt/.snapshot" >/dev/null || t_fail "cannot list .snapshot"
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/swapper.err")"
first=$(cat "$T_WORK/first")
[ -n "$first" ] || t_fail "the writer swapped nothing"
for f in "$S"/f*; do
  [ "$(od -An -tu8 -N8 "$f" | tr -d ' ')" = 2 ] || t_fail "the writer did not swap $f"
done
gens=""
for i in $(seq 0 $((N - 1))); do
  f=$(printf 'f%02d' "$i")
  gens+=" $f=$(od -An -tu8 -N8 "$mnt/.snapshot/$f" | tr -d ' ')"
done
verified=yes
"$STILLCTL" verify "$mnt/.snapshot" >"$T_WORK/verify.out" || verified=no
echo "# first swapped: $first; .snapshot:$gens; verifies: $verified"
[[ " $gens " == *" $first=1 "* && " $gens " == *"=2 "* ]] &&
  t_fail "served (verify: $verified), but the generation holds $first at 1 beside files at 2, a state the store never was in:$gens"
[ "$verified" = yes ] || { cat "$T_WORK/verify.out" >&2; t_fail "the generation served does not verify (first swapped: $first;$gens)"; }
