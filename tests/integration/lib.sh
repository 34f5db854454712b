# SPDX-License-Identifier: GPL-2.0-or-later
# Shared helpers for stillfs integration tests (sourced, bash).
# Every test gets a private work dir and a cleanup trap that kills what it started and
# unmounts what it mounted, whatever way the test ends.
set -euo pipefail
# Byte order for ls, sort and globs, as the expected listings assume, whatever the caller's locale.
export LC_ALL=C

: "${STILLCTL:?STILLCTL must point to the stillctl binary}"
T_WORK=$(mktemp -d "${TMPDIR:-/tmp}/stillfs-test.XXXXXX")
T_PIDS=()
T_MOUNTS=()
T_USERS=()

t_cleanup() {
  local rc=$? p m u
  for p in "${T_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${T_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for m in "${T_MOUNTS[@]}"; do
    if findmnt -n "$m" >/dev/null 2>&1; then fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
  done
  rm -rf "$T_WORK" 2>/dev/null || true
  for u in "${T_USERS[@]}"; do userdel -f "$u" 2>/dev/null || true; done
  exit "$rc"
}
trap t_cleanup EXIT
trap 'exit 130' INT TERM

t_fail() { echo "FAIL: $*" >&2; exit 1; }
t_log() { echo "# $*" >&2; }

# t_bg CMD...: start CMD in the background and remember it for cleanup.
t_bg() { "$@" & T_PIDS+=("$!"); }

# t_useradd NAME: a real unprivileged user (and its own group) for this test, removed with
# its group at exit.
t_useradd() {
  userdel -f "$1" 2>/dev/null || true
  useradd -M -U -d / -s /usr/sbin/nologin "$1" || t_fail "cannot create the test user $1"
  T_USERS+=("$1")
}

# t_attacker PREFIX: the test's unprivileged user, PREFIX followed by the test's pid, made with
# t_useradd; sets $user. T_WORK becomes 0711 so that the user can reach what the test makes in
# it. as_user CMD... runs CMD as that user with its own groups.
t_attacker() {
  command -v setpriv >/dev/null || t_fail "setpriv (util-linux) is needed"
  user=$1$$
  t_useradd "$user"
  chmod 711 "$T_WORK"
}
as_user() { setpriv --reuid "$user" --regid "$user" --init-groups -- "$@"; }

# t_wait_for SECONDS CMD...: poll until CMD succeeds; fail the test when time runs out.
t_wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || t_fail "timed out after ${limit}s waiting for: $*"
    sleep 0.05
  done
}

# ---- stillfs daemon helpers (used by daemon-*.sh) ----------------------------------------
# t_mount STORE MNT [stillfs options...]: run stillfs in the foreground with a private cache,
# its log in $T_DAEMON_LOG and its pid in $T_DAEMON_PID; wait until the mount is up, failing
# at once if the daemon exits first. Cleanup unmounts and kills it whatever happens.
t_is_stillfs() { [ "$(findmnt -n -o FSTYPE --mountpoint "$1" 2>/dev/null)" = fuse.stillfs ]; }
t_mount() {
  : "${STILLFS:?STILLFS must point to the stillfs binary}"
  local store=$1 mnt=$2 deadline; shift 2
  T_DAEMON_LOG=$T_WORK/daemon.$(basename "$mnt").log
  T_MOUNTS+=("$mnt")
  "$STILLFS" "$store" "$mnt" -f -o "cache=$T_WORK/cache.$(basename "$mnt")" "$@" >>"$T_DAEMON_LOG" 2>&1 &
  T_DAEMON_PID=$!
  T_PIDS+=("$T_DAEMON_PID")
  deadline=$((SECONDS + 20))
  until t_is_stillfs "$mnt"; do
    if ! kill -0 "$T_DAEMON_PID" 2>/dev/null; then
      cat "$T_DAEMON_LOG" >&2
      t_fail "stillfs exited before $mnt was mounted"
    fi
    ((SECONDS < deadline)) || t_fail "timed out waiting for the mount at $mnt"
    sleep 0.05
  done
}
# t_unmount MNT [PID]: unmount and wait for the daemon to exit; fails if it exits non-zero.
t_unmount() {
  local mnt=$1 pid=${2:-$T_DAEMON_PID} rc=0
  fusermount3 -u "$mnt" || t_fail "fusermount3 -u $mnt failed"
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || t_fail "stillfs exited with status $rc after unmount"
  t_is_stillfs "$mnt" && t_fail "$mnt still mounted"
  return 0
}
# t_cache_kept CACHE: after a clean unmount the cache holds only its marker and the last
# generation, kept for the next daemon (kept/ and kept.time), and that generation verifies.
t_cache_kept() {
  local cache=$1 have
  have=$(ls -A "$cache" | tr '\n' ' ')
  [ "$have" = ".stillfs-cache kept kept.time " ] ||
    t_fail "after unmount the cache holds '$have', not the marker and the kept generation"
  "$STILLCTL" verify "$cache/kept" >/dev/null || t_fail "the generation kept in $cache does not verify"
}
# t_status MNT KEY: one field of the daemon's status file.
t_status() { awk -v k="$2:" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$1/.stillfs-status"; }
# t_log_clean LOG [EXTRA_ALLOWED_ERE]: fail if the daemon logged anything that looks like a
# problem, other than lines matching the allowed pattern.
t_log_clean() {
  local log=$1 allow=${2:-'^$'} bad
  bad=$(grep -Ei 'error|fail|cannot|warning|invalid|unknown|abort|stale|denied|bad |refus' "$log" |
        grep -Ev -- "$allow" || true)
  if [ -n "$bad" ]; then
    echo "$bad" >&2
    t_fail "unexpected messages in the daemon log $log"
  fi
}

# t_xfs MNT: a 1 GiB XFS with reflink on a loop device ($T_WORK/xfs.img), mounted on MNT (made)
# and unmounted at exit; skips the test where XFS cannot be made or mounted. t_xfs_mount MNT
# mounts it again after an umount.
t_xfs() {
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: loop mounts need root" >&2; exit 77; }
  command -v mkfs.xfs >/dev/null || { echo "SKIP: mkfs.xfs is missing (xfsprogs)" >&2; exit 77; }
  grep -qw xfs /proc/filesystems || modprobe xfs 2>/dev/null || true
  truncate -s 1G "$T_WORK/xfs.img"
  mkfs.xfs -q -f -m reflink=1 "$T_WORK/xfs.img"
  mkdir -p "$1"
  T_MOUNTS+=("$1")
  t_xfs_mount "$1"
}
t_xfs_mount() {
  flock /tmp/stillfs-test-loopdev.lock mount -o loop "$T_WORK/xfs.img" "$1" ||
    { echo "SKIP: cannot loop-mount xfs" >&2; exit 77; }
}

# t_ext4 MNT [MKFS_OPTION...]: a 2 GiB ext4 on a loop device ($T_WORK/ext4.img), made with
# the options given, mounted on MNT (made) and unmounted at exit; skips the test where it cannot
# be made or mounted (this machine's own ext4 may refuse what a fresh one allows).
t_ext4() {
  local mnt=$1
  shift
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: loop mounts need root" >&2; exit 77; }
  command -v mkfs.ext4 >/dev/null || { echo "SKIP: mkfs.ext4 is missing (e2fsprogs)" >&2; exit 77; }
  truncate -s 2G "$T_WORK/ext4.img"
  mkfs.ext4 -q -F "$@" "$T_WORK/ext4.img" >/dev/null 2>&1 ||
    { echo "SKIP: mkfs.ext4 $* refused" >&2; exit 77; }
  mkdir -p "$mnt"
  T_MOUNTS+=("$mnt")
  flock /tmp/stillfs-test-loopdev.lock mount -o loop "$T_WORK/ext4.img" "$mnt" ||
    { echo "SKIP: cannot loop-mount ext4" >&2; exit 77; }
}
