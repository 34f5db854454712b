#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Symlinks are never followed, whatever they point to: /etc/shadow, a file or directory outside
# the store through "..", the store's own parent, loops, a link named like a database, links in
# the places of a database's -journal and -shm. The snapshot holds each link as a link with the
# same target and no byte of any target; a directory symlink is not descended; targets are not
# even read (their access times stay put). stillctl verify, given a hostile copy of a snapshot
# (files and directories replaced by links to secrets), reports them without reading through
# them; and --previous pointing at such a copy does not pull a secret into a new snapshot.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
out=$T_WORK/outside store=$T_WORK/store
mkdir -p "$out/dir" "$store/deep/er" "$store/inner"
marker="STILLFS-SECRET-$RANDOM$RANDOM"
echo "$marker file" >"$out/secret.txt"
echo "$marker in a directory" >"$out/dir/secret-in-dir.txt"
sqlite3 "$out/secret.sqlite3" "create table t(x); insert into t values ('$marker db');"
secrets=("$out/secret.txt" "$out/dir/secret-in-dir.txt" "$out/secret.sqlite3")

declare -A links=(
  [shadow]=/etc/shadow
  [abs-secret]=$out/secret.txt
  [up]=../outside/secret.txt
  [deep/er/up2]=../../../outside/secret.txt
  [dotdot-mid]=deep/../../outside/secret.txt
  [outdir]=$out/dir
  [reldir]=../outside/dir
  [parent]=..
  [self]=.
  [inner/loop1]=loop2
  [inner/loop2]=loop1
  [dangling]=/nonexistent/stillfs/x
  [linked.sqlite3]=$out/secret.sqlite3
  [rb.sqlite3-journal]=$out/secret.txt
  [wal.sqlite3-shm]=$out/secret.txt
)
echo ordinary >"$store/deep/er/file.txt"
sqlite3 "$store/rb.sqlite3" 'create table t(x); insert into t values (1);'
sqlite3 "$store/wal.sqlite3" 'pragma journal_mode=wal; pragma wal_autocheckpoint=0; create table t(x); insert into t values (7);' \
  ".shell cp '$store/wal.sqlite3' '$T_WORK/w.keep'; cp '$store/wal.sqlite3-wal' '$T_WORK/w.keep-wal'" >/dev/null
mv "$T_WORK/w.keep" "$store/wal.sqlite3"; mv "$T_WORK/w.keep-wal" "$store/wal.sqlite3-wal"
rm -f "$store/wal.sqlite3-shm"
for l in "${!links[@]}"; do ln -s "${links[$l]}" "$store/$l"; done

# Any read of a target would move its access time (relatime: an atime older than the mtime).
touch -a -d 2001-01-01 "${secrets[@]}"
atimes() { stat -c '%n %X' "${secrets[@]}"; }
before=$(atimes)
# shadow's content, to look for in the snapshot (if it has any)
shadow_line=$(head -n 1 /etc/shadow 2>/dev/null || true)

"$STILLCTL" snapshot -q "$store" "$T_WORK/snap" 2>"$T_WORK/err" || { cat "$T_WORK/err" >&2; t_fail "snapshot failed"; }
snap=$T_WORK/snap
for l in "${!links[@]}"; do
  case $l in rb.sqlite3-journal | wal.sqlite3-shm)
    # Not companions SQLite would use (it never follows a link); not copied beside the copy.
    [ ! -L "$snap/$l" ] || t_fail "$l copied beside its database"; continue ;;
  esac
  [ -L "$snap/$l" ] || t_fail "$l is not a symlink in the snapshot"
  [ "$(readlink "$snap/$l")" = "${links[$l]}" ] || t_fail "$l has another target in the snapshot"
done
if grep -rqF -- "$marker" "$snap"; then t_fail "content of an outside file is in the snapshot"; fi
if [ -n "$shadow_line" ] && grep -rqF -- "$shadow_line" "$snap"; then t_fail "/etc/shadow content is in the snapshot"; fi
[ "$(find "$snap" -type f | wc -l)" = 4 ] || { find "$snap" -type f >&2; t_fail "unexpected regular files in the snapshot"; }
[ "$(atimes)" = "$before" ] || t_fail "an outside target was read: $(atimes)"
[ "$(sqlite3 "file:$snap/wal.sqlite3?immutable=1" 'select x from t')" = 7 ] || t_fail "wal.sqlite3 lost its committed row"
r_verify "$snap"

# A hostile copy of the snapshot: a file and a directory replaced by links to secrets with
# matching names. verify must report both, and read neither.
cp -a "$snap" "$T_WORK/bad"
rm "$T_WORK/bad/deep/er/file.txt"; ln -s "$out/secret.txt" "$T_WORK/bad/deep/er/file.txt"
mkdir "$out/fake-deep"; mkdir "$out/fake-deep/er"; echo ordinary >"$out/fake-deep/er/file.txt"
touch -a -d 2001-01-01 "$out/fake-deep/er/file.txt"
rm -rf "$T_WORK/bad/inner"; ln -s "$out/fake-deep" "$T_WORK/bad/inner"
rm -rf "$T_WORK/bad2"; cp -a "$T_WORK/bad" "$T_WORK/bad2"; rm -rf "$T_WORK/bad2/deep"; ln -s "$out/fake-deep" "$T_WORK/bad2/deep"
rc=0; "$STILLCTL" verify "$T_WORK/bad" >"$T_WORK/v.out" 2>&1 || rc=$?
((rc == 1)) || { cat "$T_WORK/v.out" >&2; t_fail "verify of a hostile copy exited $rc"; }
grep -q 'deep/er/file.txt' "$T_WORK/v.out" || { cat "$T_WORK/v.out" >&2; t_fail "verify did not report the file replaced by a link"; }
rc=0; "$STILLCTL" verify "$T_WORK/bad2" >"$T_WORK/v2.out" 2>&1 || rc=$?
((rc == 1)) && grep -q 'deep/er/file.txt' "$T_WORK/v2.out" ||
  { cat "$T_WORK/v2.out" >&2; t_fail "verify followed a directory replaced by a link"; }
[ "$(atimes)" = "$before" ] || t_fail "verify read an outside target: $(atimes)"
[ "$(stat -c %X "$out/fake-deep/er/file.txt")" = "$(date -d 2001-01-01 +%s)" ] || t_fail "verify read through a directory link"

# --previous pointing at the hostile copy: nothing of it is shared into the new snapshot.
"$STILLCTL" snapshot -q --previous "$T_WORK/bad" "$store" "$T_WORK/snap2" || t_fail "incremental snapshot failed"
[ ! -L "$T_WORK/snap2/deep/er/file.txt" ] && [ "$(cat "$T_WORK/snap2/deep/er/file.txt")" = ordinary ] ||
  t_fail "a link from --previous replaced a file"
if grep -rqF -- "$marker" "$T_WORK/snap2"; then t_fail "--previous pulled a secret into the snapshot"; fi
[ "$(atimes)" = "$before" ] || t_fail "an outside target was read by the incremental capture"
r_verify "$T_WORK/snap2"
echo "# ${#links[@]} hostile symlinks kept as links, none followed or read; verify and --previous do not follow links"
