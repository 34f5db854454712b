#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stillfs basics: argument errors before daemonizing, the live view passes everything through
# (and never shows stale data when the store changes directly), .snapshot is hidden, reachable,
# read-only and mirrors modes without write bits, the status file, snapdir=visible,
# mount -t fuse.stillfs, clean unmount on SIGTERM, and a clean log.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/sub" "$mnt"
echo hello >"$store/a.txt"
echo deep >"$store/sub/b.txt"
chmod 640 "$store/a.txt"
chown 1234:5678 "$store/sub/b.txt"

# --- errors: one line, non-zero, nothing mounted ---------------------------------------------
expect_error() {  # expect_error PATTERN ARGS...
  local pat=$1 out rc=0; shift
  out=$("$STILLFS" "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || t_fail "stillfs $* succeeded"
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || t_fail "stillfs $*: not one line: $out"
  printf '%s\n' "$out" | grep -Eq -- "$pat" || t_fail "stillfs $*: unexpected message: $out"
  if [ -z "${MOUNTED:-}" ] && t_is_stillfs "$mnt"; then t_fail "stillfs $* left a mount"; fi
  return 0
}
expect_error 'nonexistent.*No such file' "$T_WORK/nonexistent" "$mnt"
expect_error 'not a directory' "$store/a.txt" "$mnt"
expect_error 'nomnt.*No such file' "$store" "$T_WORK/nomnt"
expect_error 'unknown option' "$store" "$mnt" -o bogus_option=1
# libfuse rejects that option only after the cache was claimed: a cache made by a failed start
# goes with it, an existing one stays.
expect_error 'unknown option' "$store" "$mnt" -o "bogus_option=1,cache=$T_WORK/new/cache"
[ ! -e "$T_WORK/new/cache" ] || t_fail "a failed start left the cache it made: $(ls -A "$T_WORK/new/cache")"
mkdir -p "$T_WORK/old.cache"
expect_error 'unknown option' "$store" "$mnt" -o "bogus_option=1,cache=$T_WORK/old.cache"
[ -d "$T_WORK/old.cache" ] || t_fail "a failed start removed a cache directory it did not make"
expect_error "snapdir must be" "$store" "$mnt" -o snapdir=sometimes
expect_error 'snapshot_max_age must be a number from 0' "$store" "$mnt" -o snapshot_max_age=-1
# Numbers are all of their text; an empty cache= is not the current directory.
for bad in snapshot_max_age=10abc snapshot_linger= settle_timeout=0 settle_timeout=nan \
           max_nodes=-5 max_nodes=12x max_nodes=1.5 capture_nice=3x capture_nice=20; do
  expect_error "^stillfs: ${bad%%=*} must be a (whole )?number from .*, not '${bad#*=}'\$" "$store" "$mnt" -o "$bad"
done
expect_error 'cache= needs a directory' "$store" "$mnt" -o cache=
# A cache that others could swap or fill is refused: not the daemon's own, or inside a
# directory others may write (unless sticky, as /tmp).
mkdir -p "$T_WORK/foreign.cache" "$T_WORK/open/cache" "$T_WORK/sticky/cache"
chown nobody "$T_WORK/foreign.cache"
expect_error 'belongs to uid [0-9]+, not to this daemon' "$store" "$mnt" -o "cache=$T_WORK/foreign.cache"
chmod 777 "$T_WORK/open"
expect_error "inside $T_WORK/open, which others may change" "$store" "$mnt" -o "cache=$T_WORK/open/cache"
[ -z "$(ls -A "$T_WORK/open/cache")" ] || t_fail "a refused cache was written: $(ls -A "$T_WORK/open/cache")"
chmod 1777 "$T_WORK/sticky"
t_mount "$store" "$mnt" -o "cache=$T_WORK/sticky/cache"
t_unmount "$mnt"
expect_error 'inside the store' "$store" "$store/sub"
expect_error 'outside the store' "$store" "$mnt" -o "cache=$store/sub/cache"
mkdir -p "$T_WORK/notacache" && touch "$T_WORK/notacache/precious"
expect_error 'not a stillfs cache' "$store" "$mnt" -o "cache=$T_WORK/notacache"
[ -e "$T_WORK/notacache/precious" ] || t_fail "a foreign cache directory was emptied"
# Whole outputs first: under pipefail, grep -q quitting early would fail the test by SIGPIPE.
help=$("$STILLFS" --help) || t_fail "--help failed"
grep -q 'snapshot_linger=SECS' <<<"$help" || t_fail "--help does not list the options"
version=$("$STILLFS" -V) || t_fail "-V failed"
grep -q '^stillfs ' <<<"$version" || t_fail "-V does not print the version"

# --- mount; a second mount on the same place is refused --------------------------------------
t_mount "$store" "$mnt"
MOUNTED=1 expect_error 'already a FUSE mount' "$store" "$mnt" -o "cache=$T_WORK/cache2"
[ "$(findmnt -n --mountpoint "$mnt" | wc -l)" = 1 ] || t_fail "a second mount was stacked on $mnt"

# --- hidden but reachable .snapshot, status file ---------------------------------------------
ls -a "$mnt" | grep -qx '.snapshot' && t_fail ".snapshot is listed though hidden"
ls -a "$mnt" | grep -qx '.stillfs-status' && t_fail ".stillfs-status is listed"
[ "$(t_status "$mnt" generation)" = none ] || t_fail "listing the root captured a generation"
[ "$(cat "$mnt/.snapshot/a.txt")" = hello ] || t_fail ".snapshot/a.txt has the wrong content"
[ "$(cat "$mnt/.snapshot/sub/b.txt")" = deep ] || t_fail ".snapshot/sub/b.txt has the wrong content"
[ "$(t_status "$mnt" generation)" = 1 ] || t_fail "no generation after opening .snapshot"
[ "$(stat -c %a "$mnt/.snapshot/a.txt")" = 440 ] || t_fail "snapshot mode is not the source's without write bits"
[ "$(stat -c %a "$mnt/.snapshot/sub")" = 555 ] || t_fail "snapshot dir mode is not 555"
[ "$(stat -c %u:%g "$mnt/.snapshot/sub/b.txt")" = 1234:5678 ] || t_fail "snapshot ownership differs"
[ -f "$mnt/.snapshot/.stillfs-manifest" ] || t_fail "the snapshot has no manifest"
if [ -n "${STILLCTL:-}" ] && "$STILLCTL" status "$mnt" >"$T_WORK/status.out" 2>&1; then
  grep -q '^generation: 1$' "$T_WORK/status.out" || t_fail "stillctl status: $(cat "$T_WORK/status.out")"
  for k in id cut capture_s bytes_copied bytes_shared lock_max_s pinned handles last_error; do
    grep -q "^$k: " "$T_WORK/status.out" || t_fail "stillctl status lacks $k"
  done
fi

# --- read-only snapshot: EROFS for every kind of change --------------------------------------
erofs() {  # erofs CMD...: must fail with "Read-only file system"
  local out
  out=$("$@" 2>&1) && t_fail "$* succeeded under .snapshot"
  printf '%s' "$out" | grep -q 'Read-only file system' || t_fail "$*: expected EROFS, got: $out"
  return 0
}
S=$mnt/.snapshot
erofs touch "$S/new"
erofs sh -c "echo x > '$S/a.txt'"
erofs sh -c "echo x >> '$S/a.txt'"
erofs truncate -s 0 "$S/a.txt"
erofs rm "$S/a.txt"
erofs mkdir "$S/d"
erofs rmdir "$S/sub"
erofs mv "$S/a.txt" "$S/b"
erofs chmod 777 "$S/a.txt"
erofs chown 1:1 "$S/a.txt"
erofs touch -d 2001-01-01 "$S/a.txt"
erofs ln -s x "$S/l"
erofs setfattr -n user.k -v v "$S/a.txt"
erofs rmdir "$S"
erofs touch "$mnt/.stillfs-status"
ln "$S/a.txt" "$mnt/hard" 2>/dev/null && t_fail "hard link from the snapshot into the store"

# --- live view: full passthrough --------------------------------------------------------------
M=$mnt
echo one >"$M/f" && [ "$(cat "$store/f")" = one ] || t_fail "create+write through the mount"
echo two >>"$M/f" && [ "$(cat "$M/f")" = "$(printf 'one\ntwo')" ] || t_fail "append"
mkdir "$M/d" && mv "$M/f" "$M/d/g" && [ -f "$store/d/g" ] || t_fail "mkdir/rename"
ln "$M/d/g" "$M/d/h" && [ "$(stat -c %h "$store/d/g")" = 2 ] || t_fail "link"
ln -s g "$M/d/s" && [ "$(readlink "$M/d/s")" = g ] || t_fail "symlink/readlink"
chmod 600 "$M/d/g" && [ "$(stat -c %a "$store/d/g")" = 600 ] || t_fail "chmod"
chown 42:43 "$M/d/g" && [ "$(stat -c %u:%g "$store/d/g")" = 42:43 ] || t_fail "chown"
truncate -s 3 "$M/d/g" && [ "$(stat -c %s "$store/d/g")" = 3 ] || t_fail "truncate"
touch -d '2001-02-03 04:05:06' "$M/d/g" && [ "$(stat -c %Y "$store/d/g")" = "$(date -d '2001-02-03 04:05:06' +%s)" ] || t_fail "utimens"
setfattr -n user.k -v v "$M/d/g" && [ "$(getfattr --only-values -n user.k "$store/d/g")" = v ] || t_fail "setxattr"
getfattr -d "$M/d/g" | grep -q 'user.k="v"' || t_fail "listxattr/getxattr"
setfattr -x user.k "$M/d/g" && ! getfattr -n user.k "$store/d/g" 2>/dev/null || t_fail "removexattr"
rm "$M/d/h" "$M/d/s" && [ ! -e "$store/d/h" ] || t_fail "unlink"
df "$M" >/dev/null || t_fail "statfs"
python3 - "$M" "$store" <<'PY' || t_fail "fallocate/copy_file_range/lseek/renameat2 through the mount"
import ctypes, errno, os, sys
m, s = sys.argv[1], sys.argv[2]
fd = os.open(f"{m}/sparse", os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b"start", 0)
os.pwrite(fd, b"end", 8 << 20)
assert os.fstat(fd).st_size == (8 << 20) + 3
assert os.lseek(fd, 0, os.SEEK_DATA) == 0
assert os.lseek(fd, 0, os.SEEK_HOLE) < 8 << 20           # the hole survives
assert os.lseek(fd, 1 << 20, os.SEEK_DATA) >= 4 << 20
os.posix_fallocate(fd, 0, 16 << 20)
assert os.stat(f"{s}/sparse").st_size == 16 << 20
out = os.open(f"{m}/copy", os.O_CREAT | os.O_RDWR, 0o644)
n = os.copy_file_range(fd, out, 4096, 0, 0)
assert n > 0
os.close(fd); os.close(out)
libc = ctypes.CDLL(None, use_errno=True)
AT = -100
open(f"{m}/x1", "w").write("1"); open(f"{m}/x2", "w").write("2")
assert libc.renameat2(AT, f"{m}/x1".encode(), AT, f"{m}/x2".encode(), 2) == 0  # EXCHANGE
assert open(f"{s}/x1").read() == "2" and open(f"{s}/x2").read() == "1"
assert libc.renameat2(AT, f"{m}/x1".encode(), AT, f"{m}/x2".encode(), 1) != 0  # NOREPLACE
assert ctypes.get_errno() == errno.EEXIST
PY
rmdir "$M/d" 2>/dev/null && t_fail "rmdir of a non-empty dir succeeded"
rm "$M/d/g" && rmdir "$M/d" && [ ! -e "$store/d" ] || t_fail "rmdir"

# --- the store changed directly: seen through the mount within moments ----------------------
# (stillfs(1), CAVEATS: inotify brings direct changes to the kernel's caches a few ms later)
has_text() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
size_is() { [ "$(stat -c %s "$1" 2>/dev/null)" = "$2" ]; }
echo v1 >"$M/live"
exec 3<"$M/live"                       # a handle open across the change
has_text "$M/live" v1 || t_fail "live read"
echo v2 >"$store/live"                 # same size, written directly
t_wait_for 3 has_text "$M/live" v2
echo longer-v3 >"$store/live"
t_wait_for 3 has_text "$M/live" longer-v3
t_wait_for 3 size_is "$M/live" 10
exec 3<&-
mv "$store/live" "$store/live2" && echo new >"$store/live"
t_wait_for 3 has_text "$M/live" new
t_wait_for 3 has_text "$M/live2" longer-v3
rm "$store/live2"
t_wait_for 3 test ! -e "$M/live2"
mkdir "$store/direct"
t_wait_for 3 test -d "$M/direct"

# --- SIGTERM unmounts cleanly ------------------------------------------------------------------
kill -TERM "$T_DAEMON_PID"
wait "$T_DAEMON_PID" || t_fail "stillfs exited non-zero on SIGTERM"
t_is_stillfs "$mnt" && t_fail "still mounted after SIGTERM"
t_log_clean "$T_DAEMON_LOG"

# --- snapdir=visible; a listing captures nothing ----------------------------------------------
t_mount "$store" "$mnt" -o snapdir=visible
ls -a "$mnt" | grep -qx '.snapshot' || t_fail ".snapshot not listed with snapdir=visible"
ls -la "$mnt" >/dev/null
[ "$(t_status "$mnt" generation)" = none ] || t_fail "a listing of the root captured a generation"
[ "$(cat "$mnt/.snapshot/a.txt")" = hello ] || t_fail "visible .snapshot unreadable"
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG"

# --- what fstab and mount -t fuse.stillfs do: mount(8) runs mount.fuse3, which runs
# "stillfs STORE MNT -o OPTIONS" through a shell (mount(8) itself resets PATH, so call the helper
# directly to find the stillfs under test) -------------------------------------------------------
mkdir -p "$T_WORK/bin" && ln -s "$STILLFS" "$T_WORK/bin/stillfs"
T_MOUNTS+=("$mnt")
PATH="$T_WORK/bin:$PATH" /sbin/mount.fuse3 "$store" "$mnt" -t fuse.stillfs \
  -o "rw,nodev,nosuid,snapdir=visible,snapshot_linger=1,cache=$T_WORK/cache.fstab" || t_fail "mount.fuse3 failed"
t_is_stillfs "$mnt" || t_fail "mount -t fuse.stillfs did not mount"
[ "$(cat "$mnt/.snapshot/a.txt")" = hello ] || t_fail ".snapshot unreadable via mount -t"
umount "$mnt" || t_fail "umount failed"
daemon_gone() { ! pgrep -f -- "[s]tillfs $store $mnt" >/dev/null; }
t_wait_for 10 daemon_gone
echo "# daemon-basic: ok"
