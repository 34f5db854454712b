#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Snapshot mtimes for uploaders. The hazard: a file changes during an upload, keeps its size,
# and its mtime is older than that upload. Neither rsync (size+mtime) nor aws s3 sync
# (size, or local mtime newer than the object's upload time) may skip it next time, while
# files unchanged since --previous must look unchanged to both.
source "$(dirname "$0")/lib.sh"
store=$T_WORK/store; mkdir -p "$store/seg"
for f in a b c; do head -c 100000 /dev/urandom >"$store/seg/$f.bin"; done
echo v1 >"$store/note.txt"
sqlite3 "$store/db.sqlite3" 'create table t(x); insert into t values (1);'
# The engine only trusts a file's identity as proof of "unchanged" once its ctime is 2 s old.
old_enough() { [ $(( $(date +%s) - $(stat -c %Z "$store/seg/a.bin") )) -ge 3 ]; }
t_wait_for 10 old_enough
"$STILLCTL" snapshot -q "$store" "$T_WORK/s1"
mkdir "$T_WORK/up"; rsync -a "$T_WORK/s1/" "$T_WORK/up/"
upload_time=$(date +%s.%N)   # what S3 would record as LastModified for every object
# The hazard: same size, mtime set back before the upload.
old=$(stat -c %y "$store/seg/b.bin")
head -c 100000 /dev/urandom >"$store/seg/b.bin"; touch -d "$old" "$store/seg/b.bin"
echo v2 >"$store/note.txt"; touch -d '2001-01-01' "$store/note.txt"
sqlite3 "$store/db.sqlite3" 'update t set x = 2;'    # same size, new content
"$STILLCTL" snapshot -q --previous "$T_WORK/s1" "$store" "$T_WORK/s2"
for f in seg/b.bin note.txt db.sqlite3; do
  m=$(stat -c %.9Y "$T_WORK/s2/$f")
  [ "$(echo "$m > $upload_time" | bc)" = 1 ] || t_fail "$f changed but its mtime $m is not after the upload ($upload_time): s3 sync would skip it"
done
for f in seg/a.bin seg/c.bin; do
  [ "$(stat -c %.9Y "$T_WORK/s1/$f")" = "$(stat -c %.9Y "$T_WORK/s2/$f")" ] || t_fail "$f unchanged but its mtime moved: it would be uploaded again"
  [ "$(stat -c %i "$T_WORK/s1/$f")" = "$(stat -c %i "$T_WORK/s2/$f")" ] || t_fail "$f unchanged but not shared with --previous"
done
# rsync: exactly the changed files are sent, and the result equals the new snapshot.
sent=$(rsync -a --out-format='%n' "$T_WORK/s2/" "$T_WORK/up/" | grep -v '/$' | sort | tr '\n' ' ')
[ "$sent" = ".stillfs-manifest db.sqlite3 note.txt seg/b.bin " ] || t_fail "rsync sent [$sent]"
diff -r "$T_WORK/s2" "$T_WORK/up" || t_fail "rsync copy differs from the snapshot"
"$STILLCTL" verify "$T_WORK/up" >/dev/null || t_fail "rsync copy does not verify"
# --uploads-before: the cut falls in a later whole second than the given upload time, and a
# capture that knows the last upload is old does not wait for the next second.
up2=$(date +%s.%N)
echo v3 >"$store/note.txt"
"$STILLCTL" snapshot -q --uploads-before "$up2" --previous "$T_WORK/s2" "$store" "$T_WORK/s3"
m=$(stat -c %Y "$T_WORK/s3/note.txt")
(( m > ${up2%.*} )) || t_fail "--uploads-before $up2: the changed note.txt has mtime $m, not a later second"
"$STILLCTL" snapshot -q --uploads-before "$(date -d '+1 hour' +%s)" "$store" "$T_WORK/s4" 2>/dev/null &&
  t_fail "--uploads-before in the future was accepted"
[ ! -e "$T_WORK/s4" ] || t_fail "a refused snapshot left $T_WORK/s4 behind"
# A previous snapshot whose file no longer is what its manifest says (rewritten in place,
# same size, after an upload) proves nothing: a copy equal to the manifest's digest still gets
# a new mtime, or s3 sync would keep the rewritten bytes.
"$STILLCTL" snapshot -q "$store" "$T_WORK/s5"
chmod u+w "$T_WORK/s5/seg/c.bin"
head -c 100000 /dev/urandom >"$T_WORK/s5/seg/c.bin"
up5=$(date +%s.%N)
"$STILLCTL" snapshot -q --previous "$T_WORK/s5" "$store" "$T_WORK/s6"
m=$(stat -c %.9Y "$T_WORK/s6/seg/c.bin")
[ "$(echo "$m > $up5" | bc)" = 1 ] || t_fail "seg/c.bin: its previous copy was rewritten, yet it kept that copy's mtime $m (upload at $up5)"
cmp -s "$store/seg/c.bin" "$T_WORK/s6/seg/c.bin" || t_fail "seg/c.bin in s6 differs from the store"

# Without --uploads-before, a capture may skip the wait for the next second only when nothing
# of the earlier snapshot was read since it was published. An upload that reads only a
# subdirectory, or opens a file it knows without listing anything, must count: the changed
# file's mtime must fall in a later second than that read, or s3 sync keeps the old bytes.
mkdir -p "$store/sub"; head -c 4096 /dev/urandom >"$store/sub/f.bin"
"$STILLCTL" snapshot -q "$store" "$T_WORK/u1"
"$STILLCTL" snapshot -q --previous "$T_WORK/u1" "$store" "$T_WORK/u2"
early_after() { local n; n=$(date +%s.%N); (( ${n%.*} > $1 )) && [ "${n#*.}" \< 2 ]; }
k=3
for read in 'ls "$T_WORK/$prev/sub"' 'cat "$T_WORK/$prev/sub/f.bin"' \
            'find "$T_WORK/$prev/sub" -type f -exec cat {} +'; do
  prev=u$((k - 1))
  t_wait_for 5 early_after "$(stat -c %Z "$T_WORK/$prev")"
  head -c 4096 /dev/urandom >"$store/sub/f.bin"
  eval "$read" >/dev/null
  read_at=$(date +%s)
  "$STILLCTL" snapshot -q --previous "$T_WORK/$prev" "$store" "$T_WORK/u$k"
  m=$(stat -c %Y "$T_WORK/u$k/sub/f.bin")
  (( m > read_at )) || t_fail "after [$read] in second $read_at, the changed sub/f.bin got mtime $m: s3 sync of u$k would skip it"
  k=$((k + 1))
done
# Nothing read u$((k - 1)) since it was published: the next capture need not wait for a later
# second (its summary says so); once any file of it is read, it must.
head -c 4096 /dev/urandom >"$store/sub/f.bin"
"$STILLCTL" snapshot --previous "$T_WORK/u$((k - 1))" "$store" "$T_WORK/u$k" 2>"$T_WORK/sum" >&2
grep -q 'earlier snapshot unread' "$T_WORK/sum" || t_fail "u$((k - 1)) was not read, yet the capture did not see that: $(cat "$T_WORK/sum")"
cat "$T_WORK/u$k/seg/a.bin" >/dev/null
"$STILLCTL" snapshot --previous "$T_WORK/u$k" "$store" "$T_WORK/u$((k + 1))" 2>"$T_WORK/sum" >&2
grep -q 'earlier snapshot unread' "$T_WORK/sum" && t_fail "seg/a.bin of u$k was read, yet the capture took u$k for unread"
echo "ok"
