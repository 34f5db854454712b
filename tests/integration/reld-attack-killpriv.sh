#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Writing to a set-ID file or one with file capabilities through the mount takes them away
# exactly as writing to it in the store does. A user who may write a set-user-ID root program
# but leaves its set-user-ID bit in place has made themselves root; a local file system clears
# set-user-ID, set-group-ID (of a group-executable file, or for a writer outside its group) and
# security.capability when a writer without CAP_FSETID writes, truncates (by descriptor or by
# name), fallocates or copies into it, or opens it with O_TRUNC, and whenever it is chowned
# (to another owner, or to its own: chown(-1, -1)). Through FUSE with
# FUSE_HANDLE_KILLPRIV_V2 the kernel leaves that to the file system. Each operation is done
# once in the store and once through the mount, on two files made alike, by root, by root
# without CAP_FSETID and by an unprivileged user, on set-user-ID and set-group-ID files with
# and without execute bits and on files with security.capability (files with an execute or a
# set-ID bit get no passthrough backing, the others do); the modes and capabilities afterwards
# must be the same, but for the known differences below. Also through a mount with
# -o no_passthrough, and writes through mmap, which clear nothing in the store.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLFS:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
command -v setcap >/dev/null || t_fail "setcap (libcap2-bin) is needed"
t_attacker sfkp
store=$T_WORK/store
mkdir -p "$store/pub" "$T_WORK/mnt" "$T_WORK/mntnp"
chmod 1777 "$store/pub"
head -c 8192 /dev/urandom >"$store/pub/src"
chmod 644 "$store/pub/src"

# Who does it: root, root without CAP_FSETID, an unprivileged user.
run_as() {
  local who=$1; shift
  case $who in
    root) "$@" ;;
    nofsetid) setpriv --bounding-set -fsetid --inh-caps -fsetid -- "$@" ;;
    user) as_user "$@" ;;
  esac
}
# The operations, on file $1 (source $2 for copy_file_range).
op_cmd() {
  local op=$1 f=$2 src=$3
  case $op in
    write) printf 'x' | dd of="$f" conv=notrunc status=none ;;
    pwrite) python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, b"y", 4096); os.close(fd)' "$f" ;;
    truncate) truncate -s 100 "$f" ;;
    ptruncate) python3 -c 'import os,sys; os.truncate(sys.argv[1], 50)' "$f" ;;
    otrunc) sh -c ': >"$1"' sh "$f" ;;
    fallocate) fallocate -o 8192 -l 65536 "$f" ;;
    copy) python3 -c 'import os,sys
i=os.open(sys.argv[2], os.O_RDONLY); o=os.open(sys.argv[1], os.O_WRONLY)
os.copy_file_range(i, o, 4096, 0, 0)' "$f" "$src" ;;
    mmap) python3 -c 'import mmap,sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 0); m[0] = 0x7a; m.flush(); m.close()' "$f" ;;
    chownnop) python3 -c 'import os,sys; os.chown(sys.argv[1], -1, -1)' "$f" ;;
    chown) if [ "$who" = user ]; then chgrp "$user" "$f"; else chown "$user" "$f"; fi ;;
  esac
}
# The kinds of file: mode, and whether it has file capabilities.
kinds="4777 4666 2777 2666 6755 0777+cap 0666+cap 4777+cap 2775+cap"
make_file() {
  local f=$1 kind=$2 op=$3 who=$4
  head -c 8192 /dev/zero >"$f"
  # The user chgrps a file of their own; the others are root's.
  if [[ $op == chown* ]] && [ "$who" = user ]; then chown "$user:root" "$f"; else chown root:root "$f"; fi
  chmod "${kind%+cap}" "$f"
  if [[ $kind == *+cap ]]; then setcap cap_net_raw+ep "$f" || t_fail "setcap failed"; fi
  chmod "${kind%+cap}" "$f"    # setcap leaves set-ID bits, but be sure
}
state() { printf '%s%s' "$(stat -c %a "$1")" "$(getcap "$1" | grep -q cap_net_raw && echo +cap)"; }

# Where the mount clears more than the store, for reasons of FUSE itself:
# - pages written through a mapping that the kernel keeps in the mount's page cache (files
#   without a passthrough backing: executables, set-ID files, -o no_passthrough) reach the
#   store as writes, which drop security.capability; a local file system keeps it (mmap);
# - when root (with CAP_FSETID) writes, fallocates or copies into a set-ID file that also has
#   file capabilities, the kernel asks to clear privileges (for the capabilities) without
#   saying which, and the daemon, which cannot tell root with CAP_FSETID from root without,
#   clears the set-ID bits too.
# - pages a user other than root wrote through such a mapping are written back with the ids
#   of the handle's opener (not root's, which could fill the blocks ext4 keeps for root: see
#   reld-attack-mmapfill), without CAP_FSETID, so the store's file system clears the set-ID
#   bits too (mmap by user).
# All take privileges away, never leave any.
known() {
  local who=$1 op=$2 kind=$3 ns=$4 ms=$5 m=${4%+cap}
  [ "$op" = mmap ] && [ "$ns" = "$ms+cap" ] && return 0
  [ "$op" = mmap ] && [ "$who" = user ] && [ "${#m}" = 4 ] && [[ $ms == "${m:1}" || $ms == "${m:1}+cap" ]] &&
    return 0
  [ "$who" = root ] && [[ $kind == [246]*+cap ]] && [[ " write pwrite fallocate copy " == *" $op "* ]] &&
    [ "${ns:1}" = "$ms" ] && return 0
  return 1
}
mismatches=0 cases=0 known=0
check_mount() {
  local mnt=$1 tag=$2 who op kind n m ns ms
  for who in root nofsetid user; do
    for op in write pwrite truncate ptruncate otrunc fallocate copy mmap chown chownnop; do
      for kind in $kinds; do
        # a file only root may write: the user writes those of mode o+w only
        if [ "$who" = user ] && [[ $op != chown* ]] && [ "${kind:3:1}" != 7 ] && [ "${kind:3:1}" != 6 ]; then
          continue
        fi
        n=$store/pub/n.$tag.$who.$op.$kind m=m.$tag.$who.$op.$kind
        make_file "$n" "$kind" "$op" "$who"
        make_file "$store/pub/$m" "$kind" "$op" "$who"
        run_as "$who" bash -c "$(declare -f op_cmd); who=$who user=$user; op_cmd $op '$n' '$store/pub/src'" ||
          t_fail "$who $op on a $kind file in the store failed"
        run_as "$who" bash -c "$(declare -f op_cmd); who=$who user=$user; op_cmd $op '$mnt/pub/$m' '$mnt/pub/src'" ||
          t_fail "$who $op on a $kind file through the mount ($tag) failed"
        ns=$(state "$n") ms=$(state "$store/pub/$m")
        cases=$((cases + 1))
        if [ "$ns" != "$ms" ] && known "$who" "$op" "$kind" "$ns" "$ms"; then
          t_log "known: $tag: $who $op on $kind: in the store -> $ns, through the mount -> $ms"
          known=$((known + 1))
        elif [ "$ns" != "$ms" ]; then
          echo "MISMATCH $tag: $who $op on $kind: in the store -> $ns, through the mount -> $ms" >&2
          mismatches=$((mismatches + 1))
        fi
        rm -f "$n" "$store/pub/$m"
      done
    done
  done
}

t_mount "$store" "$T_WORK/mnt" -o auto_unmount,allow_other,snapshot_max_age=3600,snapshot_linger=0
t_log "passthrough: $(t_status "$T_WORK/mnt" passthrough)"
check_mount "$T_WORK/mnt" pt
t_unmount "$T_WORK/mnt"
t_mount "$store" "$T_WORK/mntnp" -o auto_unmount,allow_other,no_passthrough,snapshot_max_age=3600,snapshot_linger=0
check_mount "$T_WORK/mntnp" np
t_unmount "$T_WORK/mntnp"
[ "$mismatches" = 0 ] || t_fail "$mismatches of $cases operations left set-ID bits or capabilities other than the store's own rules do"
echo "PASS: $cases operations ($known known differences, listed above) through the mount clear set-ID bits and capabilities as in the store"
