#!/usr/bin/env bash
# Fifos, sockets and device nodes in the store:
# - the live view shows them with their types (passthrough of the entries);
# - opening them through the mount never involves the daemon (the kernel serves special files
#   of a FUSE mount itself): a reader blocked on a fifo with no writer blocks only itself, the
#   daemon keeps answering meanwhile, a non-blocking open returns at once, a device node cannot
#   be opened (the mount is nodev); the daemon (traced with strace -f -y) never opens any of them except as
#   O_PATH for lookups;
# - captures skip them, each with a warning that reaches the daemon's log at warning level,
#   and finish (a fifo without a writer does not stall them); .snapshot and its manifest
#   leave them out.
# Caveat recorded here: a fifo or socket used through the mount is the kernel's own object
# for the FUSE inode, not the store's: a writer of STORE/fifo does not reach a reader of
# MOUNTPOINT/fifo (checked below, so that a change in this behaviour is noticed).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
command -v strace >/dev/null || t_fail "strace is needed"
store=$T_WORK/store mnt=$T_WORK/mnt
mkdir -p "$store/d" "$mnt"
mksock() { perl -MSocket -e 'socket(S, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!"; bind(S, sockaddr_un($ARGV[0])) or die "bind: $!"' "$1"; }
mkfifo "$store/SPECIAL-fifo" "$store/d/SPECIAL-fifo2.sqlite3"
mksock "$store/d/SPECIAL-sock"
mknod "$store/SPECIAL-zero" c 1 5
mknod "$store/d/SPECIAL-loop" b 7 0
echo plain >"$store/d/plain"
t_mount "$store" "$mnt" -o auto_unmount,snapshot_max_age=3600,snapshot_linger=0
reld_trace "$T_DAEMON_PID" "$T_WORK/strace.log"

# Shown with their types.
[ "$(stat -c %F "$mnt/SPECIAL-fifo")" = fifo ] || t_fail "fifo shown as $(stat -c %F "$mnt/SPECIAL-fifo")"
[ "$(stat -c %F "$mnt/d/SPECIAL-sock")" = socket ] || t_fail "socket shown as $(stat -c %F "$mnt/d/SPECIAL-sock")"
[ "$(stat -c '%F %t:%T' "$mnt/SPECIAL-zero")" = "character special file 1:5" ] || t_fail "char device shown as $(stat -c '%F %t:%T' "$mnt/SPECIAL-zero")"
[ "$(stat -c '%F %t:%T' "$mnt/d/SPECIAL-loop")" = "block special file 7:0" ] || t_fail "block device shown as $(stat -c '%F %t:%T' "$mnt/d/SPECIAL-loop")"
[ "$(ls "$mnt" "$mnt/d" | grep -c SPECIAL)" = 5 ] || t_fail "the listing does not show all special files"

# A reader blocked on the fifo blocks only itself.
cat "$mnt/SPECIAL-fifo" >"$T_WORK/fifo.out" 2>&1 &
blocked=$!; T_PIDS+=("$blocked")
in_fifo() { grep -Eq 'wait_for_partner|pipe_read|fifo' "/proc/$blocked/wchan" 2>/dev/null; }  # opening, or reading
t_wait_for 10 in_fifo
t0=$SECONDS
for i in $(seq 20); do
  stat "$mnt/d/plain" >/dev/null && [ "$(cat "$mnt/d/plain")" = plain ] && ls "$mnt/d" >/dev/null ||
    t_fail "the daemon did not answer while a reader waited on the fifo"
done
[ "$(cat "$mnt/.snapshot/d/plain")" = plain ] || t_fail "no generation while a reader waited on the fifo"
kill -0 "$blocked" || t_fail "the fifo reader did not block (no writer): $(cat "$T_WORK/fifo.out")"
# The store's fifo is another pipe: its writer does not reach the mount's reader.
timeout 2 sh -c "echo from-store >'$store/SPECIAL-fifo'" 2>/dev/null || true
kill -0 "$blocked" || t_fail "a writer of the store's fifo reached the mount's reader (behaviour changed: document it)"
# A writer through the mount does.
echo through-mount >"$mnt/SPECIAL-fifo"
fifo_done() { ! kill -0 "$blocked" 2>/dev/null; }
t_wait_for 10 fifo_done
reld_forget "$blocked"
[ "$(cat "$T_WORK/fifo.out")" = through-mount ] || t_fail "the fifo through the mount carried '$(cat "$T_WORK/fifo.out")'"
# Non-blocking opens return at once; the device reads as the device.
timeout 5 python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK))' "$mnt/SPECIAL-fifo" ||
  t_fail "a non-blocking open of the fifo did not return"
# libfuse mounts nodev (and nosuid) unless told otherwise: device nodes are not usable there.
grep -Eq "$mnt fuse.stillfs [^ ]*nosuid,nodev" /proc/mounts || t_fail "the mount is not nosuid,nodev: $(grep "$mnt" /proc/mounts)"
out=$(head -c 16 "$mnt/SPECIAL-zero" 2>&1) && t_fail "a device node was usable through a nodev mount"
grep -q 'Permission denied' <<<"$out" || t_fail "opening a device node through the mount: $out"
out=$(timeout 5 perl -MSocket -e 'socket(S, PF_UNIX, SOCK_STREAM, 0) or die; connect(S, sockaddr_un($ARGV[0])) or die "$!\n"' "$mnt/d/SPECIAL-sock" 2>&1) &&
  t_fail "connecting to the socket through the mount reached someone"
grep -q 'Connection refused' <<<"$out" || t_fail "connecting to the socket through the mount: $out"

# Captures skip them, with warnings, and finish.
timeout 60 "$STILLCTL" refresh "$mnt" >/dev/null || t_fail "refresh failed or hung"
for s in SPECIAL-fifo d/SPECIAL-fifo2.sqlite3 d/SPECIAL-sock SPECIAL-zero d/SPECIAL-loop; do
  [ ! -e "$mnt/.snapshot/$s" ] && [ ! -L "$mnt/.snapshot/$s" ] || t_fail ".snapshot holds the special file $s"
  grep -q " $s\$" "$mnt/.snapshot/.stillfs-manifest" && t_fail "the manifest lists the special file $s"
  grep -Eq "^stillfs: warning: capture: skipping .*$s" "$T_DAEMON_LOG" ||
    { cat "$T_DAEMON_LOG" >&2; t_fail "no warning in the log about skipping $s"; }
done
[ "$(cat "$mnt/.snapshot/d/plain")" = plain ] || t_fail "the plain file is not in .snapshot"
"$STILLCTL" verify "$mnt/.snapshot" >"$T_WORK/verify.out" 2>&1 || { cat "$T_WORK/verify.out" >&2; t_fail "verify"; }

reld_untrace
grep -q 'SPECIAL-fifo' "$T_WORK/strace.log" || t_fail "the trace does not show the lookups (strace not working?): $(cat "$T_WORK/strace.log.err")"
opened=$(grep -E '<[^>]*SPECIAL-[^>]*>$' "$T_WORK/strace.log" | grep -E 'open(at|at2)?\(' | grep -v O_PATH || true)
[ -z "$opened" ] || { echo "$opened" >&2; t_fail "the daemon or its helper opened a special file"; }
t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG" 'warning: capture: skipping .*SPECIAL-.*: not a regular file, directory or symlink'
echo "# reld-special: ok"
