#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A reader cannot lock writers out. With FUSE passthrough the kernel refuses any open of an
# inode that is not passthrough of the same backing file while one is; the backing file of a
# read-only open used to be opened read-only, so while any user who may read a file (a
# world-readable database) kept it open through the mount, every open of it for writing - by
# its owner, by the application - failed with EIO. Now the backing is read-write whenever it
# can be, and:
# - the store's owner opens (O_RDWR, O_WRONLY) and writes a 0644 file and an SQLite database
#   that an unprivileged user holds open read-only through the mount;
# - the reader still cannot write through its own descriptor, nor mmap it writable, nor open
#   the file for writing; nor can it stop an executable it holds open from being run;
# - a non-owner's write to a group-writable set-user-ID file, while another handle of it is
#   open, still clears the bit.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfrd
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt" "$T_WORK/u" && chown "$user" "$T_WORK/u"
echo original >"$store/f" && chown daemon:daemon "$store/f" && chmod 644 "$store/f"
sqlite3 "$store/db" 'create table t(x); insert into t values (1);'
chown daemon:daemon "$store/db" && chmod 644 "$store/db"
chown daemon:daemon "$store" && chmod 755 "$store"
printf 'orig' >"$store/suid" && chown root:"$user" "$store/suid" && chmod 4775 "$store/suid"
cp /bin/true "$store/prog" && chown daemon:daemon "$store/prog" && chmod 755 "$store/prog"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
t_log "passthrough: $(t_status "$mnt" passthrough)"
as_owner() { setpriv --reuid daemon --regid daemon --clear-groups -- "$@"; }
py=$(command -v python3.11 || command -v python3)
[[ $py == /usr/* ]] || py=/usr/bin/python3   # a pyenv shim under /root is not the user's to run

# The attacker holds both files open read-only, and tries to write through them. (setpriv
# itself in the background, not as_user: $! must be the process that becomes python.)
setpriv --reuid "$user" --regid "$user" --init-groups -- "$py" - "$mnt/f" "$mnt/db" "$T_WORK/u/held" "$mnt/prog" <<'EOF' &
import mmap, os, sys, time
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:3] + sys.argv[4:5]]
for fd in fds:
    os.read(fd, 1)
bad = []
try:
    os.write(fds[0], b"x"); bad.append("write")
except OSError:
    pass
try:
    mmap.mmap(fds[0], 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE); bad.append("mmap")
except (OSError, ValueError):
    pass
try:
    os.open(sys.argv[1], os.O_WRONLY); bad.append("open")
except OSError:
    pass
with open(sys.argv[3] + ".tmp", "w") as f:
    f.write(" ".join(bad) or "none")
os.rename(sys.argv[3] + ".tmp", sys.argv[3])
time.sleep(3600)
EOF
reader=$!
T_PIDS+=("$reader")
held() { [ -e "$T_WORK/u/held" ]; }
t_wait_for 20 held
[ "$(cat "$T_WORK/u/held")" = none ] || t_fail "the reader wrote through its read-only open: $(cat "$T_WORK/u/held")"

out=$(as_owner sh -c "echo changed >'$mnt/f'" 2>&1) ||
  t_fail "the owner cannot open their file for writing while a reader holds it: $out"
out=$(as_owner sh -c "echo appended >>'$mnt/f'" 2>&1) ||
  t_fail "the owner cannot append to their file while a reader holds it: $out"
[ "$(cat "$store/f")" = "changed
appended" ] || t_fail "the owner's writes did not reach the store: $(cat "$store/f")"
out=$(as_owner sqlite3 "$mnt/db" 'insert into t values (2); select count(*) from t;' 2>&1) ||
  t_fail "the owner cannot write their database while a reader holds it: $out"
[ "$out" = 2 ] || t_fail "the owner's database write: $out"

# ... nor running the executable it holds open.
"$store/prog" || t_fail "an executable the reader holds open through the mount cannot be run (ETXTBSY?)"

# A write by a non-owner (the group may write) clears set-user-ID, a handle open beside it or not.
as_user "$py" - "$mnt/suid" <<'EOF' || t_fail "the group member cannot write the group-writable file"
import os, sys
r = os.open(sys.argv[1], os.O_RDONLY)
w = os.open(sys.argv[1], os.O_WRONLY)
os.write(w, b"EVIL")
os.close(w); os.close(r)
EOF
[ "$(stat -c %a "$store/suid")" = 775 ] ||
  t_fail "set-user-ID kept after a non-owner's write: mode $(stat -c %a "$store/suid")"
kill "$reader" && wait "$reader" 2>/dev/null || true
reld_forget "$reader"
t_unmount "$mnt"
echo "PASS: a reader holding files open does not stop their writers"
