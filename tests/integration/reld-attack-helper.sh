#!/usr/bin/env bash
# The capture helper (a child of the root daemon that reads the whole store) holds only the
# privileges a capture needs: while a capture runs, its effective, permitted and bounding
# capability sets are CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER and FSETID, it has no
# inheritable or ambient ones, and no_new_privs is set. The capture it makes
# still gives every file its owner and mode.
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

# A store that never holds still keeps the capture's helper alive while we look at it.
( exec 2>/dev/null; i=0; while :; do echo "$i" >"$store/busy"; i=$((i + 1)); done ) & busy=$!
T_PIDS+=("$busy")
"$STILLCTL" refresh "$mnt" >"$T_WORK/refresh.out" 2>&1 & ref=$!
T_PIDS+=("$ref")
helper=
found() { helper=$(pgrep -P "$T_DAEMON_PID" -f -- '--capture-helper' | head -n 1); [ -n "$helper" ]; }
t_wait_for 20 found
T_PIDS+=("$helper")
field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$helper/status"; }
# CHOWN 0, DAC_OVERRIDE 1, DAC_READ_SEARCH 2, FOWNER 3, FSETID 4
want=000000000000001f
for set in CapEff CapPrm CapBnd; do
  [ "$(field "$set")" = "$want" ] || t_fail "the capture helper's $set is $(field "$set"), not $want"
done
for set in CapInh CapAmb; do
  [ "$(field "$set")" = 0000000000000000 ] || t_fail "the capture helper's $set is $(field "$set")"
done
[ "$(field NoNewPrivs)" = 1 ] || t_fail "the capture helper may gain privileges (NoNewPrivs $(field NoNewPrivs))"
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
echo "# reld-attack-helper: ok"
