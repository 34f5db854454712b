#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The capture helper (a child of the root daemon that reads the whole store) holds only the
# privileges a capture needs: while a capture runs, its effective, permitted and bounding
# capability sets are CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID and SYS_NICE, it has no
# inheritable or ambient ones, and no_new_privs is set. The capture it makes
# still gives every file its owner and mode.
# And it reads the store through no path a user can redirect.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/d" "$mnt"
echo secret >"$store/d/f" && chown daemon:daemon "$store/d/f" && chmod 2640 "$store/d/f"
sqlite3 "$store/d/db" 'create table t(x); insert into t values (1);'
chown daemon:daemon "$store/d/db" && chmod 440 "$store/d/db"
chown nobody:nogroup "$store/d" && chmod 500 "$store/d"
t_mount "$store" "$mnt" -o auto_unmount,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=30

# A database held in a write transaction keeps the capture's helper waiting while we look.
python3 - "$store/d/db" >"$T_WORK/busy.out" <<'EOF' & busy=$!
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("begin exclusive"); c.execute("insert into t values (0)")
print("locked", flush=True); time.sleep(3600)
EOF
T_PIDS+=("$busy")
busy_locked() { grep -q locked "$T_WORK/busy.out"; }
t_wait_for 20 busy_locked
"$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 & ref=$!
T_PIDS+=("$ref")
helper=
found() { helper=$(pgrep -P "$T_DAEMON_PID" -f -- '--capture-helper' | head -n 1); [ -n "$helper" ]; }
t_wait_for 20 found
T_PIDS+=("$helper")
field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$helper/status"; }
# CHOWN 0, DAC_OVERRIDE 1, DAC_READ_SEARCH 2, FOWNER 3, FSETID 4, SYS_NICE 23
want=000000000080001f
# Just spawned, it may not have given them up yet (it does before it starts working).
dropped() { [ "$(field CapEff)" = "$want" ]; }
t_wait_for 10 dropped
for set in CapEff CapPrm CapBnd; do
  [ "$(field "$set")" = "$want" ] || t_fail "the capture helper's $set is $(field "$set"), not $want"
done
for set in CapInh CapAmb; do
  [ "$(field "$set")" = 0000000000000000 ] || t_fail "the capture helper's $set is $(field "$set")"
done
[ "$(field NoNewPrivs)" = 1 ] || t_fail "the capture helper may gain privileges (NoNewPrivs $(field NoNewPrivs))"
kill -0 "$helper" 2>/dev/null || t_fail "the capture ended while its status was read"
kill "$busy"; wait "$busy" 2>/dev/null || true
reld_forget "$busy"
wait "$ref" || t_fail "the capture failed: $(cat "$T_WORK/refresh.out")"
reld_forget "$ref" "$helper"
[ "$(stat -c '%U:%G %a' "$mnt/.snapshot/d/f")" = "daemon:daemon 2440" ] ||
  t_fail "the snapshot's file is $(stat -c '%U:%G %a' "$mnt/.snapshot/d/f"), not daemon:daemon 2440"
[ "$(stat -c '%U:%G %a' "$mnt/.snapshot/d")" = "nobody:nogroup 500" ] ||
  t_fail "the snapshot's directory is $(stat -c '%U:%G %a' "$mnt/.snapshot/d")"
[ "$(cat "$mnt/.snapshot/d/f")" = secret ] || t_fail "the snapshot's file lost its contents"
# Again, after a change: this capture takes the earlier one's database copy over.
sqlite3 "$store/d/db" 'insert into t values (2);'
"$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 || t_fail "the second capture failed: $(cat "$T_WORK/refresh.out")"
[ "$(sqlite3 "file:$mnt/.snapshot/d/db?mode=ro&immutable=1" 'select count(*) from t')" = 2 ] ||
  t_fail "the snapshot's database is not the store's"
[ "$(stat -c '%U:%G %a' "$mnt/.snapshot/d/db")" = "daemon:daemon 440" ] ||
  t_fail "the snapshot's database is $(stat -c '%U:%G %a' "$mnt/.snapshot/d/db")"
t_unmount "$mnt"

# While an SQLite WAL index is open through the mount, the helper reads the store through the
# mount. A user who can rename a directory above the mountpoint can make its path lead to a
# directory of theirs: the helper must not read that as the store.
atk_user=sfhlp$$
useradd -M -N -s /usr/sbin/nologin "$atk_user" || t_fail "cannot create the test user"
trap 'rc=$?; set +e; reld_untrace; ( (exit "$rc"); t_cleanup ); userdel "$atk_user" 2>/dev/null; exit "$rc"' EXIT
as_user=(setpriv --reuid "$atk_user" --regid nogroup --clear-groups --)
chmod 711 "$T_WORK"
home=$T_WORK/home
mkdir -p "$home/x/mnt" && chown -R "$atk_user" "$home"
mnt2=$home/x/mnt
# no_passthrough: with passthrough the WAL index is the store's own, and the store is read directly.
t_mount "$store" "$mnt2" -o auto_unmount,allow_other,no_passthrough,snapshot_max_age=3600,snapshot_linger=0
python3 - "$mnt2/wal.db" >"$T_WORK/app.out" <<'EOF' & app=$!
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma journal_mode=wal"); c.execute("create table if not exists t(x)")
c.execute("insert into t values (1)")
print("open", flush=True); time.sleep(3600)
EOF
T_PIDS+=("$app")
app_open() { grep -q open "$T_WORK/app.out"; }
t_wait_for 20 app_open
# Through the mount's own root, the capture works and sees the WAL's last commit.
"$STILLCTL" refresh "$mnt2" >"$T_WORK/refresh.out" 2>&1 || t_fail "a capture through the mount failed: $(cat "$T_WORK/refresh.out")"
[ "$(sqlite3 "file:$mnt2/.snapshot/wal.db?mode=ro&immutable=1" 'select count(*) from t')" = 1 ] ||
  t_fail "the snapshot misses the WAL's commit"
"${as_user[@]}" sh -c "mv '$home/x' '$home/moved' && mkdir -p '$home/x/mnt' && echo planted >'$home/x/mnt/planted'" ||
  t_fail "the user could not move the mountpoint's parent"
mnt2=$home/moved/mnt
T_MOUNTS+=("$mnt2")
"$STILLCTL" refresh "$mnt2" >"$T_WORK/refresh.out" 2>&1 && t_fail "a capture read the store through a path the user redirected"
[ -e "$mnt2/.snapshot/planted" ] && t_fail "the user's planted file is in the snapshot"
grep -q "does not lead to this mount" "$T_DAEMON_LOG" || t_fail "the daemon did not say why: $(tail -n 3 "$T_DAEMON_LOG")"
kill "$app"; wait "$app" 2>/dev/null || true
reld_forget "$app"
t_unmount "$mnt2"
echo "# reld-attack-helper: ok"
