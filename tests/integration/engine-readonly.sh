#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A capture reads a live WAL database without writing the store: run under strace, it opens
# no store file for writing or creation, maps none writable, writes, truncates, deletes or
# renames none; and the -shm is byte for byte as it was, though the application's last commit
# is newer than every read mark in it (a reader that may write records a mark there).
# The snapshot holds every committed row.
source "$(dirname "$0")/lib.sh"
command -v strace >/dev/null || { echo "# strace is not installed" >&2; exit 77; }
store=$T_WORK/store; mkdir "$store"
echo beside > "$store/plain"

# The application: commits one row at a time in WAL mode, then stays open and idle.
cat > "$T_WORK/app.py" <<'PY'
import os, sqlite3, sys, time
db, ready, stop = sys.argv[1:4]
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
for i in range(300):
    c.execute("INSERT INTO t(v) VALUES (?)", ("row %d" % i,))
with open(ready + ".tmp", "w") as f:
    f.write("300")
os.rename(ready + ".tmp", ready)
while not os.path.exists(stop):
    time.sleep(0.01)
c.close()
PY
t_bg python3 "$T_WORK/app.py" "$store/app.db" "$T_WORK/ready" "$T_WORK/stop"
t_wait_for 30 test -e "$T_WORK/ready"

# mxFrame (header offset 16) above every used read mark (offsets 100-119; 0xffffffff unused).
python3 - "$store/app.db-shm" <<'PY' || t_fail "setup: a read mark already equals the last commit"
import struct, sys
b = open(sys.argv[1], "rb").read(120)
mx = struct.unpack_from("<I", b, 16)[0]
marks = [m for m in struct.unpack_from("<5I", b, 100) if m != 0xffffffff]
sys.exit(0 if mx > 0 and max(marks) < mx else 1)
PY
state() { (cd "$store" && find . -printf '%p %s %T@ %C@\n' | sort && sha256sum ./*); }
before=$(state)

# (LeakSanitizer cannot run under ptrace: in a sanitizer build, leaks are looked for elsewhere)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
strace -f -y -qq -o "$T_WORK/trace" -e trace=open,openat,openat2,creat,truncate,ftruncate,write,pwrite64,writev,pwritev,pwritev2,fallocate,mmap,unlink,unlinkat,rename,renameat,renameat2,fchown,fchownat,fchmod,fchmodat,utimensat,fsetxattr,fremovexattr \
  "$STILLCTL" snapshot -q "$store" "$T_WORK/snap" || t_fail "snapshot failed"
[ "$before" = "$(state)" ] || { diff <(echo "$before") <(state) >&2; t_fail "the live store was modified"; }

# Lines of the trace about a store file: by name, or by a descriptor strace -y resolved.
grep -E "$store([/>\"])" "$T_WORK/trace" > "$T_WORK/store-calls" || t_fail "the trace shows no store file"
grep -qE 'app\.db-wal' "$T_WORK/store-calls" || t_fail "the trace does not show the -wal opened"
bad=$(grep -E 'O_(RDWR|WRONLY|CREAT|TRUNC)|PROT_WRITE|^[0-9]+ +(creat|truncate|ftruncate|write|pwrite64|writev|pwritev2?|fallocate|unlink|unlinkat|rename|renameat2?|fchown|fchownat|fchmod|fchmodat|utimensat|fsetxattr|fremovexattr)\(' \
  "$T_WORK/store-calls" | grep -vE '= -1 ' || true)
# (an unlinkat or rename whose target is outside the store names it only in its dirfd)
[ -z "$bad" ] || { echo "$bad" >&2; t_fail "the capture opened, mapped or changed a store file for writing"; }

[ "$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM t").fetchone()[0])' "$T_WORK/snap/app.db")" = 300 ] ||
  t_fail "the snapshot does not hold the 300 committed rows"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "verify failed"
touch "$T_WORK/stop"
