#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# An upload that reads a file of the current generation while the next one is being captured,
# and ends in the second that capture dates the file's new bytes in: its object's upload time
# is then not before that mtime, and `aws s3 sync` (size equal, mtime not newer than the
# object) would skip the change. The daemon notes such a read (a file closed while a capture
# runs) and captures anew for the next opener of .snapshot, dating the change later. It must
# do so while another uploader holds a file of some generation open, too (it once waited
# until no file was open, and served that opener the generation that dated the change
# before the upload ended).
# Here: uploader A lists .snapshot and reads f through that listing, again and again, while a
# refresh (started a quarter of a second before a whole second, so that its cut falls in the
# next one) captures f's new bytes; A's next pass must find f dated after its last read of the
# old bytes ended, while uploader B holds .snapshot/g open all the while.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
head -c 4096 /dev/urandom >"$store/f"
head -c 4096 /dev/urandom >"$store/g"
t_mount "$store" "$mnt" -o snapshot_max_age=3600,snapshot_linger=2
out=$(python3 - "$store" "$mnt" "$STILLCTL" <<'PY'
import hashlib, os, subprocess, sys, time
store, mnt, stillctl = sys.argv[1:4]
snap = mnt + "/.snapshot"
def status(k):
    with open(mnt + "/.stillfs-status") as s:
        for l in s:
            if l.startswith(k + ":"):
                return l.split(":", 1)[1].strip()
def sha(b): return hashlib.sha256(b).hexdigest()[:12]
os.listdir(snap)
hold = os.open(snap + "/g", os.O_RDONLY)          # uploader B, slow: g stays open
d = os.open(snap, os.O_RDONLY | os.O_DIRECTORY)   # uploader A listed generation 1
while not 0.70 <= time.time() % 1 < 0.80:         # a quarter of a second before a whole one
    time.sleep(0.005)
with open(store + "/f", "r+b") as f:              # the application rewrites f, same size
    f.write(os.urandom(4096))
r = subprocess.Popen([stillctl, "refresh", mnt], stdout=subprocess.DEVNULL)
while status("capturing") != "yes" and r.poll() is None:
    time.sleep(0.005)
last = None
while r.poll() is None:                           # A uploads f of generation 1 meanwhile
    fd = os.open("f", os.O_RDONLY, dir_fd=d)
    data = os.read(fd, 1 << 20)
    os.close(fd)
    last = (time.time(), sha(data))
    time.sleep(0.01)
if r.wait() != 0 or last is None:
    sys.exit("refresh failed, or no read during the capture")
os.close(d)
U, up = last
st = os.stat(snap + "/f")                         # A's next pass, while B still holds g
with open(snap + "/f", "rb") as f:
    now = sha(f.read())
os.close(hold)
print(int(st.st_mtime), "%.3f" % U, up, now, status("generation"))
PY
) || t_fail "the uploaders failed"
read -r m u up now gen <<<"$out"
t_unmount "$mnt"
t_log "A's upload of f (bytes $up) ended at $u; its next pass finds generation $gen, f (bytes $now) dated $m"
[ "$up" != "$now" ] || t_fail "f did not change between the upload and the next pass"
awk -v m="$m" -v u="$u" 'BEGIN{exit !(m <= int(u))}' &&
  t_fail "f changed (bytes $up uploaded, $now now) but is dated $m, not after the upload that ended at $u: aws s3 sync skips it"
t_log "OK: the changed f is dated after the upload of its old bytes"
