#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A hot journal may name a super-journal (a transaction over several databases): the capture
# looks that path up, as root, to decide whether to roll its copy back, and the outcome shows
# in the copy. The path is the journal's content, which the database's owner chooses: a user
# with a database of their own in the store asks the capture whether any path exists, even
# below directories they may not search (root's 0700 directory here), and reads the answer in
# .snapshot (old row: it exists; new row: it does not). Two databases naming a file that exists
# and one that does not must come out the same.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
/usr/bin/python3 -c 'import sqlite3' 2>/dev/null || t_fail "python3's sqlite3 module is needed"
t_attacker sfsj
store=$T_WORK/store mnt=$T_WORK/mnt priv=$T_WORK/private
mkdir -p "$store/pub" "$mnt" "$priv"
chmod 1777 "$store/pub"
chmod 700 "$priv"
echo secret >"$priv/present"
echo hello >"$store/root.txt"
as_user stat "$priv/present" >/dev/null 2>&1 && t_fail "setup: the user can look into the private directory"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0,settle_timeout=5
[ "$(cat "$mnt/.snapshot/root.txt")" = hello ] || t_fail "the first snapshot is not readable"

# The user's database with a hot journal (the one of a committed update, kept aside), whose
# end names a super-journal of their choice.
cat >"$T_WORK/probe.py" <<'PY'
import os, shutil, sqlite3, struct, sys
db, probe = sys.argv[1], sys.argv[2].encode()
c = sqlite3.connect(db, isolation_level=None)
c.execute("pragma journal_mode=delete")
c.execute("pragma synchronous=off")
c.execute("create table t(x)")
c.execute("insert into t values('OLDROW')")
c.execute("begin")
c.execute("update t set x='NEWROW'")
shutil.copyfile(db + "-journal", db + ".j")
c.execute("commit")
c.close()
psize = 4096
pgno = 0x40000000 // psize + 1
s = sum(b if b < 128 else b - 256 for b in probe) & 0xffffffff
with open(db + ".j", "ab") as f:
    f.write(struct.pack(">I", pgno) + probe + struct.pack(">II", len(probe), s) +
            bytes([0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]))
os.rename(db + ".j", db + "-journal")
PY
chmod 644 "$T_WORK/probe.py"
as_user /usr/bin/python3 "$T_WORK/probe.py" "$store/pub/yes.db" "$priv/present" || t_fail "setup: probe database"
as_user /usr/bin/python3 "$T_WORK/probe.py" "$store/pub/no.db" "$priv/absent" || t_fail "setup: probe database"
chmod 644 "$store"/pub/*.db

timeout -s KILL 60 "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 && rc=0 || rc=$?
t_log "refresh: exit $rc"
row() { as_user cat "$mnt/.snapshot/pub/$1" 2>/dev/null | grep -ao 'OLDROW\|NEWROW' | head -1; }
yes=$(row yes.db) no=$(row no.db)
t_log "snapshot rows: naming a file that exists: '$yes'; one that does not: '$no'"
[ "$yes" = "$no" ] ||
  t_fail "the capture told the user whether a path in root's private directory exists ($yes vs $no)"
t_unmount "$mnt"
echo "PASS: a journal's super-journal name tells its owner nothing about paths they cannot see"
