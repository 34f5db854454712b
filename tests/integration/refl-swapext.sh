#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# XFS_IOC_SWAPEXT (xfs_fsr's call) gives a file the extents, so the bytes, of another file of
# the same size. Any user who can write both may call it. It moves neither mtime nor ctime of
# the file and raises no IN_MODIFY (only the open and close of a descriptor, which the capture
# does not watch). An unprivileged writer rewrites a group of files f00..f19 (8 MiB each,
# generation 1) this way to generation 2, starting with the first file the capture has copied
# (cloned, hashed and closed: IN_CLOSE_NOWRITE), then the others in order. At every instant
# the store holds that first file at a generation at least as new as every other file's. A
# snapshot that stillctl publishes must verify, and must not hold the first file at 1 and
# another at 2. Store and snapshot share one reflink XFS.
source "$(dirname "$0")/lib.sh"
command -v setpriv >/dev/null && [ -x /usr/bin/python3 ] || { echo "SKIP: setpriv (util-linux) or /usr/bin/python3 is missing" >&2; exit 77; }
N=20

mnt=$T_WORK/xfs
t_xfs "$mnt"
S=$mnt/store D=$mnt/donors
mkdir -p "$S" "$D"
chmod 711 "$T_WORK"
# the writer runs as another user, who may not reach the source tree
cp "$(dirname "${BASH_SOURCE[0]}")/swapext.py" "$T_WORK/"

chown 65534:65534 "$S" "$D"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/swapext.py" "$S" "$D" "$N" "$D/ready" >"$T_WORK/first" 2>"$T_WORK/swapper.err" &
T_PIDS+=("$!")
writer=$!
t_wait_for 60 test -e "$D/ready"
rc=0
"$STILLCTL" snapshot -q "$S" "$mnt/snap" 2>"$T_WORK/snap.err" || rc=$?
wait "$writer" || t_fail "the writer failed: $(cat "$T_WORK/swapper.err")"
T_PIDS=()
first=$(cat "$T_WORK/first")
[ -n "$first" ] || t_fail "the writer swapped nothing"
for f in "$S"/f*; do
  [ "$(od -An -tu8 -N8 "$f" | tr -d ' ')" = 2 ] || t_fail "the writer did not swap $f"
done
[ "$rc" -eq 0 ] || t_fail "the snapshot exited $rc: $(cat "$T_WORK/snap.err")"
gens=""
for i in $(seq 0 $((N - 1))); do
  f=$(printf 'f%02d' "$i")
  gens+=" $f=$(od -An -tu8 -N8 "$mnt/snap/$f" | tr -d ' ')"
done
verified=yes
"$STILLCTL" verify "$mnt/snap" >"$T_WORK/verify.out" || verified=no
torn=no
[[ " $gens " == *" $first=1 "* && " $gens " == *"=2 "* ]] && torn=yes
echo "# first swapped: $first; snapshot:$gens; verifies: $verified"
[ "$torn" = no ] || t_fail "published (exit 0; stillctl verify: $verified), but the snapshot holds $first at generation 1 beside files at 2, a state the store never was in:$gens"
[ "$verified" = yes ] || { cat "$T_WORK/verify.out" >&2; t_fail "published (exit 0), but the snapshot does not verify (first swapped: $first;$gens)"; }

# The same swap between two snapshots: a later snapshot may share an earlier one's copy of a
# file only while the file is unchanged, which its stat no longer shows. Once the files are old
# enough for their stat to be trusted (2 s), a snapshot is taken on the XFS (clones) and one on
# the test's own file system (copies); then f05 gets generation 3 by a swap, and each is taken
# again with the first as --previous.
newest=$(stat -c %Z "$S"/f* | sort -n | tail -1)
t_wait_for 30 bash -c "(( \$(date +%s) >= $newest + 3 ))"
"$STILLCTL" snapshot -q "$S" "$mnt/base" || t_fail "the base snapshot on XFS failed"
"$STILLCTL" snapshot -q "$S" "$T_WORK/ebase" || t_fail "the base snapshot on $(df --output=fstype "$T_WORK" | tail -1) failed"
setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 "$T_WORK/swapext.py" --one "$S/f05" "$D/g05" 3 ||
  t_fail "the swap of f05 failed"
[ "$(od -An -tu8 -N8 "$S/f05" | tr -d ' ')" = 3 ] || t_fail "the swap did not give f05 generation 3"
for pair in "$mnt/base $mnt/next" "$T_WORK/ebase $T_WORK/enext"; do
  set -- $pair
  "$STILLCTL" snapshot -q --previous "$1" "$S" "$2" || t_fail "the snapshot after $1 failed"
  got=$(od -An -tu8 -N8 "$2/f05" | tr -d ' ')
  [ "$got" = 3 ] || t_fail "$2 (after $1) holds f05 at generation $got, the store at 3: the copy was shared from before the swap"
  "$STILLCTL" verify "$2" >/dev/null || t_fail "$2 does not verify"
done
umount "$mnt" || t_fail "cannot unmount"
