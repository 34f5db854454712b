#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A database's -wal (and hot -journal) is copied beside the database's private copy and folded
# into it by SQLite, and the copy takes the database's owner and mode. The companion is opened
# by name with the capture helper's DAC_OVERRIDE, whoever owns it: a user who may rename files
# in a directory shared with another user (a group's 2770 directory) puts the other user's
# private -wal (0600) at the name `their.db-wal` beside a database of their own. The capture
# then folds the victim's committed pages into the attacker's copy, which the attacker reads in
# .snapshot. The same with the victim's database in use: -wal and -shm renamed together are
# read by the helper's own SQLite as a live WAL database's. Locally the attacker cannot read
# the -wal at all. A companion that a reader of the database could not read must not be
# folded into its copy (the capture fails instead).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import sqlite3' 2>/dev/null || t_fail "python3's sqlite3 module is needed"
t_attacker sfca
victim=sfcv$$
t_useradd "$victim"
usermod -aG "$victim" "$user" || t_fail "cannot add $user to group $victim"
as_victim() { setpriv --reuid "$victim" --regid "$victim" --init-groups -- "$@"; }
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/team" "$mnt"
chown "root:$victim" "$store/team"
chmod 2770 "$store/team"
echo hello >"$store/root.txt"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=5
[ "$(cat "$mnt/.snapshot/root.txt")" = hello ] || t_fail "the first snapshot is not readable"

# The victim's private WAL database, its commits still in the -wal (its process ended without
# closing it, so nothing was checkpointed).
secret=SECRET-$$-wal-pages
# victim.py DIR NAME SECRET [hold]: the victim's private WAL database DIR/NAME with SECRET in
# its -wal; the process then ends without closing it, or with "hold" keeps the connection (and
# its -shm) until killed.
cat >"$T_WORK/victim.py" <<'PY'
import os, signal, sqlite3, sys
os.umask(0o077)
c = sqlite3.connect(sys.argv[1] + "/" + sys.argv[2])
c.execute("pragma journal_mode=wal")
c.execute("pragma wal_autocheckpoint=0")
c.execute("create table t(x)")
c.execute("insert into t values(?)", (sys.argv[3],))
c.commit()
if sys.argv[4:] != ["hold"]:
    os._exit(0)
c.execute("select * from t").fetchall()
print("ready", flush=True)
signal.pause()
PY
chmod 644 "$T_WORK/victim.py"
as_victim /usr/bin/python3 "$T_WORK/victim.py" "$store/team" v.db "$secret" || t_fail "setup: the victim's database"
grep -q "$secret" "$store/team/v.db-wal" || t_fail "setup: the secret is not in the victim's -wal"
as_user cat "$store/team/v.db-wal" >/dev/null 2>&1 && t_fail "setup: the attacker can read the victim's -wal directly"

# The attacker's own database (WAL format, no -wal left), and the victim's -wal renamed
# beside it (allowed: the attacker may write the directory).
as_user /usr/bin/python3 -c '
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/a.db")
c.execute("pragma journal_mode=wal")
c.execute("create table mine(y)")
c.commit()
c.close()' "$store/team"
chmod 644 "$store/team/a.db"
as_user mv "$store/team/v.db-wal" "$store/team/a.db-wal" || t_fail "setup: the rename was refused"

timeout -s KILL 60 "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 && rc=0 || rc=$?
t_log "refresh: exit $rc"
[ "$rc" = 137 ] && t_fail "the refresh did not return"
if as_user cat "$mnt/.snapshot/team/a.db" 2>/dev/null | grep -aq "$secret"; then
  t_fail "the attacker read the victim's private -wal through their own database's copy in .snapshot"
fi
as_user cat "$mnt/.snapshot/team/a.db-wal" 2>/dev/null | grep -aq "$secret" &&
  t_fail "the attacker read the victim's private -wal in .snapshot"
as_user rm -f "$store/team/a.db" "$store/team/a.db-wal"
t_log "a cold -wal: the victim's pages did not reach the attacker"

# A -wal the attacker's group may read by its mode, but that an ACL entry denies them.
secret3=SECRET-$$-acl-wal
as_victim /usr/bin/python3 -c '
import os, sqlite3, sys
os.umask(0o027)
c = sqlite3.connect(sys.argv[1] + "/x.db")
c.execute("pragma journal_mode=wal")
c.execute("pragma wal_autocheckpoint=0")
c.execute("create table t(x)")
c.execute("insert into t values(?)", (sys.argv[2],))
c.commit()
os._exit(0)' "$store/team" "$secret3" || t_fail "setup: the victim's second database"
setfacl -m "u:$user:---" "$store/team/x.db-wal" || t_fail "setfacl failed"
as_user cat "$store/team/x.db-wal" >/dev/null 2>&1 && t_fail "setup: the ACL does not keep the attacker out"
as_user /usr/bin/python3 -c '
import os, sqlite3, sys
os.umask(0o077)
c = sqlite3.connect(sys.argv[1] + "/c.db")
c.execute("pragma journal_mode=wal")
c.execute("create table mine(y)")
c.commit()
c.close()' "$store/team"
as_user mv "$store/team/x.db-wal" "$store/team/c.db-wal" || t_fail "setup: the rename was refused"
timeout -s KILL 60 "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 && rc=0 || rc=$?
t_log "refresh: exit $rc"
if as_user cat "$mnt/.snapshot/team/c.db" 2>/dev/null | grep -aq "$secret3"; then
  t_fail "the attacker read a -wal an ACL denied them through their own database's copy"
fi
as_user rm -f "$store/team/c.db" "$store/team/c.db-wal"
t_log "an ACL-denied -wal: the victim's pages did not reach the attacker"

# The same with the victim's database in use: its connection holds the -shm (and its lock),
# and both -wal and -shm are renamed beside the attacker's database, which the capture then
# reads as a live WAL database with the victim's index and pages.
secret2=SECRET-$$-live-wal
setpriv --reuid "$victim" --regid "$victim" --init-groups -- \
  /usr/bin/python3 "$T_WORK/victim.py" "$store/team" w.db "$secret2" hold >"$T_WORK/holder.out" 2>&1 &
holder=$!
T_PIDS+=("$holder")
t_wait_for 20 grep -q ready "$T_WORK/holder.out"
as_user /usr/bin/python3 -c '
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/b.db")
c.execute("pragma journal_mode=wal")
c.execute("create table mine(y)")
c.commit()
c.close()' "$store/team"
chmod 644 "$store/team/b.db"
as_user mv "$store/team/w.db-wal" "$store/team/b.db-wal" || t_fail "setup: the rename was refused"
as_user mv "$store/team/w.db-shm" "$store/team/b.db-shm" || t_fail "setup: the rename was refused"
timeout -s KILL 60 "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 && rc=0 || rc=$?
t_log "refresh: exit $rc"
[ "$rc" = 137 ] && t_fail "the refresh did not return"
if as_user cat "$mnt/.snapshot/team/b.db" 2>/dev/null | grep -aq "$secret2"; then
  t_fail "the attacker read the victim's live -wal through their own database's copy in .snapshot"
fi
t_log "a live -wal and -shm: the victim's pages did not reach the attacker"
kill "$holder"
wait "$holder" 2>/dev/null || true
reld_forget "$holder"
