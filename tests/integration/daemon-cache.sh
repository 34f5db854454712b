#!/usr/bin/env bash
# The live view's kernel caches and passthrough stay coherent with the store.
# - Passthrough is negotiated where the kernel has it (Linux >= 6.9, as root); reads and writes
#   through the mount, and a shared mmap, see the same bytes as direct users of the store.
# - Entries and attributes are cached: a path looked up twice reaches the daemon once (counted
#   in the daemon's -d request log); with -o no_live_cache it reaches it every time.
# - Direct changes to STORE show through the mount without waiting for a timeout: an append
#   (size), a chmod, a name created after a failed lookup (negative entry), a deletion, a
#   directory renamed, a file replaced by rename; each is polled for, at most 3 s.
# - A non-owner's write through the mount still clears a set-user-ID bit.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/a/b" "$mnt"
chmod 711 "$T_WORK"
echo hello >"$store/a/b/f"
head -c 3000000 /dev/urandom >"$store/big"

t_mount "$store" "$mnt" -d -o allow_other
log=$T_DAEMON_LOG
kmaj=$(uname -r | cut -d. -f1) kmin=$(uname -r | cut -d. -f2)
pt=$(t_status "$mnt" passthrough)
if ((kmaj > 6 || (kmaj == 6 && kmin >= 9))) && [ "$(id -u)" = 0 ]; then
  [ "$pt" = on ] || t_fail "passthrough is '$pt' on Linux $(uname -r) as root"
fi
t_log "passthrough: $pt"

# Same bytes both ways, through read/write and through a shared mapping.
cmp "$store/big" "$mnt/big" || t_fail "live read differs from the store"
printf 'through-mount' | dd of="$mnt/big" bs=1 seek=100 conv=notrunc status=none
[ "$(dd if="$store/big" bs=1 skip=100 count=13 status=none)" = through-mount ] ||
  t_fail "a write through the mount did not reach the store"
python3 - "$mnt/big" "$store/big" <<'EOF' || t_fail "shared mmap through the mount is not coherent with the store"
import mmap, os, sys
fm = os.open(sys.argv[1], os.O_RDWR)
fs = os.open(sys.argv[2], os.O_RDWR)
m = mmap.mmap(fm, 4096)
s = mmap.mmap(fs, 4096)
m[0:5] = b"MMAP1"              # through the mount, seen directly
assert s[0:5] == b"MMAP1", s[0:5]
s[10:15] = b"MMAP2"            # directly, seen through the mount
assert m[10:15] == b"MMAP2", m[10:15]
EOF
cmp "$store/big" "$mnt/big" || t_fail "live read differs from the store after writes"

# Cached: the second stat of a path does not reach the daemon.
lookups() { grep -c "opcode: LOOKUP" "$log" || true; }
stat "$mnt/a/b/f" >/dev/null
n1=$(lookups)
stat "$mnt/a/b/f" >/dev/null; stat "$mnt/a/b/f" >/dev/null
n2=$(lookups)
[ "$n1" = "$n2" ] || t_fail "a repeated stat reached the daemon ($n1 -> $n2 lookups)"

# Direct changes are seen without waiting for a timeout.
size_is() { [ "$(stat -c %s "$1")" = "$2" ]; }
mode_is() { [ "$(stat -c %a "$1")" = "$2" ]; }
echo more >>"$store/a/b/f"
t_wait_for 3 size_is "$mnt/a/b/f" 11
chmod 600 "$store/a/b/f"
t_wait_for 3 mode_is "$mnt/a/b/f" 600
[ -e "$mnt/a/b/new" ] && t_fail "a name that does not exist is found"
echo new >"$store/a/b/new"
t_wait_for 3 test -e "$mnt/a/b/new"
[ "$(cat "$mnt/a/b/new")" = new ] || t_fail "the new file reads wrong"
rm "$store/a/b/new"
t_wait_for 3 test ! -e "$mnt/a/b/new"
mv "$store/a/b" "$store/a/c"
t_wait_for 3 test -e "$mnt/a/c/f"
t_wait_for 3 test ! -e "$mnt/a/b"
echo replaced >"$store/a/c/tmp" && mv "$store/a/c/tmp" "$store/a/c/f"
has_text() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
t_wait_for 3 has_text "$mnt/a/c/f" replaced

# Set-user-ID is cleared by a write of another user, as on the store itself.
echo data >"$store/suid" && chmod 4777 "$store/suid"
setpriv --reuid nobody --regid nogroup --clear-groups -- sh -c "echo x >>'$mnt/suid'" ||
  t_fail "nobody cannot write a mode 4777 file through the mount"
[ "$(stat -c %a "$store/suid")" = 777 ] || t_fail "set-user-ID kept after nobody's write: $(stat -c %a "$store/suid")"
t_unmount "$mnt"

# Without the cache every stat asks the daemon.
mkdir -p "$mnt"
t_mount "$store" "$mnt" -d -o no_live_cache
log=$T_DAEMON_LOG
stat "$mnt/a/c/f" >/dev/null
n1=$(lookups)
stat "$mnt/a/c/f" >/dev/null
n2=$(lookups)
((n2 > n1)) || t_fail "with no_live_cache a repeated stat was answered from the kernel cache"
t_unmount "$mnt"
echo "ok: passthrough $pt; live entries cached and invalidated on direct changes"
