#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The tree changes under a running capture: files deleted, renamed (in and across directories),
# truncated, replaced by a directory, and directories replaced by a symlink to a directory
# outside the store. A background mutator works through the objects in order, with short
# pauses and, every 25 objects, one longer than the quiet window (so a cut may fall
# mid-sequence), while captures run back to back; big files keep each capture busy.
# A published snapshot must be one real state: objects 0..j-1 mutated and j..M-1 intact for
# some j, every byte as in that state, nothing else in it, nothing from outside, and it must
# verify. A capture may instead fail (exit 3: no quiet moment in time) with nothing published.
# The one exception is the mutator's own doing: an object changed in several steps (3 and 5
# below, several processes) can be left between two steps for longer than the quiet window
# (under I/O an `rm` was seen to take 160 ms to exit after its unlink, the next step coming
# only then), and a cut there is a true instant. The mutator times each change, and a
# snapshot torn inside one is accepted only if the object is as the change leaves it between
# two steps and the cut (the manifest's cut_ns) fell in that change at least the quiet window
# after the change began.
# Then the store directory itself is removed during a capture: a clear failure naming it,
# nothing published; and renamed during one: the capture follows it.
# env: REL_MUTATE_OBJECTS (default 300); REL_MUTATE_BIG_MB (default 40), the size of the big files
# (those of the store removed and renamed below are half as big again).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
M=${REL_MUTATE_OBJECTS:-300} BIG=${REL_MUTATE_BIG_MB:-40}
store=$T_WORK/store out=$T_WORK/outside
mkdir -p "$store" "$out"
marker="STILLFS-OUTSIDE-$RANDOM$RANDOM"
echo "$marker" >"$out/secret.txt"
pad=$(printf '%02000d' 0)
D=20
for d in $(seq 0 $((D - 1))); do mkdir "$store/d$d"; done
for i in $(seq 0 199); do printf 'static %d\n%s' "$i" "$pad" >"$store/d$((i % D))/s$i"; done
for d in 3 8 13 18; do (yes "big file in d$d" || true) | head -c "${BIG}M" >"$store/d$d/big"; done
content() { printf 'victim %d\n%s' "$1" "$pad"; }
dir_of() { echo "$store/d$(($1 % D))"; }
for k in $(seq 0 $((M - 1))); do
  if ((k % 6 == 5)); then mkdir "$(dir_of "$k")/x$k"; printf 'x %d\n' "$k" >"$(dir_of "$k")/x$k/f"
  else content "$k" >"$(dir_of "$k")/v$k"; fi
done
base_entries=$(find "$store" -mindepth 1 | wc -l)
pristine=$T_WORK/pristine; cp -a "$store" "$pristine"

Q=100 # the captures' --quiet-ms
mutlog=$T_WORK/mutlog
: >"$mutlog"
ns() { local t=${1/./}; echo "${t}000"; } # $EPOCHREALTIME (s.us) in ns
mutate() {  # mutate K: object K goes from intact to mutated; logs "K START_NS END_NS"
  local k=$1 d t0; d=$(dir_of "$1")
  t0=$EPOCHREALTIME
  case $((k % 6)) in
    0) rm "$d/v$k" ;;
    1) mv "$d/v$k" "$d/v$k.moved" ;;
    2) truncate -s 100 "$d/v$k" ;;
    3) rm "$d/v$k"; mkdir "$d/v$k"; printf 'dir %d\n' "$k" >"$d/v$k/inner" ;;
    4) mv "$d/v$k" "$store/d$(((k + 1) % D))/v$k.across" ;;
    5) rm -rf "$d/x$k"; ln -s "$out" "$d/x$k" ;;
  esac
  echo "$k $(ns "$t0") $(ns "$EPOCHREALTIME")" >>"$mutlog"
}
# stalled SNAP K: 0 if the cut of SNAP fell inside the change of object K, at least the quiet
# window after it began (the capture waits that long after the last event it saw, and a torn K
# was seen to begin): a torn K is then a true instant the mutator stopped at, still for longer
# than the window. The timing goes to stderr either way.
stalled() {
  local s=$1 k=$2 cut t0 t1 line
  cut=$(sed -n 's/^cut_ns //p' "$s/.stillfs-manifest")
  for _ in $(seq 100); do line=$(grep "^$k " "$mutlog" || true); [ -z "$line" ] || break; sleep 0.1; done
  read -r _ t0 t1 <<<"$line"
  [ -n "$cut" ] && [ -n "$t0" ] || return 1
  echo "# $s: object $k torn; its change took $(((t1 - t0) / 1000000)) ms, the cut came $(((cut - t0) / 1000000)) ms into it" >&2
  ((t0 + Q * 1000000 <= cut && cut <= t1))
}
# between SNAP K: 0 if object K in SNAP is as its change leaves it between two steps: for 3, no
# v (removed) or an empty directory v, or one holding only an empty inner; for 5, no x (its
# file and then itself removed) or an empty directory x.
between() {
  local d=$1/d$(($2 % D)) k=$2
  case $((k % 6)) in
    3) [ ! -e "$d/v$k" ] && [ ! -L "$d/v$k" ] && return 0
       [ -d "$d/v$k" ] && [ ! -L "$d/v$k" ] || return 1
       [ -z "$(ls -A "$d/v$k")" ] || { [ "$(ls -A "$d/v$k")" = inner ] && [ ! -s "$d/v$k/inner" ]; } ;;
    5) [ ! -e "$d/x$k" ] && [ ! -L "$d/x$k" ] && return 0
       [ -d "$d/x$k" ] && [ ! -L "$d/x$k" ] && [ -z "$(ls -A "$d/x$k")" ] ;;
    *) return 1 ;;
  esac
}
# entries of object K in tree S (its names and what lies under them)
entries_of() { local d=$1/d$(($2 % D)); find "$d" -mindepth 1 \( -path "$d/v$2" -o -path "$d/v$2/*" -o -path "$d/x$2" -o -path "$d/x$2/*" \) | wc -l; }
# What an intact victim file holds, and a truncated one (k % 6 == 2), one file each, so that
# judging compares bytes with one process per file.
expect=$T_WORK/expect
mkdir "$expect"
for k in $(seq 0 $((M - 1))); do
  ((k % 6 == 5)) && continue
  content "$k" >"$expect/v$k"
  if ((k % 6 == 2)); then printf -v c 'victim %d\n%s' "$k" "$pad"; printf '%s' "${c:0:100}" >"$expect/t$k"; fi
done
# state SNAP K: sets ST to "intact", "mutated" or "bad" for object K in snapshot SNAP.
state() {
  local s=$1 k=$2 d=$1/d$(($2 % D)) v=$expect/v$2
  ST=bad
  case $((k % 6)) in
    0) if [ ! -e "$d/v$k" ]; then ST=mutated; elif cmp -s "$d/v$k" "$v"; then ST=intact; fi ;;
    1) if [ -f "$d/v$k" ] && [ ! -e "$d/v$k.moved" ] && cmp -s "$d/v$k" "$v"; then ST=intact
       elif [ ! -e "$d/v$k" ] && [ -f "$d/v$k.moved" ] && cmp -s "$d/v$k.moved" "$v"; then ST=mutated; fi ;;
    2) if cmp -s "$d/v$k" "$v"; then ST=intact
       elif cmp -s "$d/v$k" "$expect/t$k"; then ST=mutated; fi ;;
    3) if [ -f "$d/v$k" ] && cmp -s "$d/v$k" "$v"; then ST=intact
       elif [ -d "$d/v$k" ] && [ "$(ls -A "$d/v$k")" = inner ] && [ "$(cat "$d/v$k/inner")" = "dir $k" ]; then ST=mutated; fi ;;
    4) local a=$s/d$(((k + 1) % D))/v$k.across
       if [ -f "$d/v$k" ] && [ ! -e "$a" ] && cmp -s "$d/v$k" "$v"; then ST=intact
       elif [ ! -e "$d/v$k" ] && [ -f "$a" ] && cmp -s "$a" "$v"; then ST=mutated; fi ;;
    5) if [ -d "$d/x$k" ] && [ ! -L "$d/x$k" ] && [ "$(cat "$d/x$k/f")" = "x $k" ]; then ST=intact
       elif [ -L "$d/x$k" ] && [ "$(readlink "$d/x$k")" = "$out" ]; then ST=mutated; fi ;;
  esac
}
# entries each object adds to the tree when intact / when mutated
delta() { case $(($1 % 6)) in 0 | 5) DELTA=-1 ;; 3) DELTA=1 ;; *) DELTA=0 ;; esac; }
# judge SNAP: the snapshot is one real state; prints j.
judge() {
  local s=$1 k j=-1 extra=0 stalls=0
  for ((k = 0; k < M; k++)); do
    state "$s" "$k"
    if [ "$ST" = bad ] && ((j < 0)) && between "$s" "$k" && stalled "$s" "$k"; then
      # the cut fell inside this change, stretched by the mutator: count the object's entries
      # as they are, and judge the rest as state k
      ST=intact j=$k; stalls=$((stalls + 1))
      extra=$((extra + $(entries_of "$s" "$k") - $(entries_of "$pristine" "$k")))
      continue
    fi
    case $ST in
      mutated) ((j < 0)) || t_fail "$s: object $k mutated after intact object $j: not one instant"
               delta "$k"; extra=$((extra + DELTA)) ;;
      intact) ((j >= 0)) || j=$k ;;
      *) stalled "$s" "$k" || true
         t_fail "$s: object $k is neither intact nor mutated: torn or foreign" ;;
    esac
  done
  ((j >= 0)) || j=$M
  local n; n=$(find "$s" -mindepth 1 ! -name .stillfs-manifest | wc -l)
  ((n == base_entries + extra)) || t_fail "$s: $n entries, expected $((base_entries + extra)) for state $j"
  if grep -rqF -- "$marker" "$s"; then t_fail "$s: content from outside the store"; fi
  for i in $(seq 0 199); do
    cmp -s "$s/d$((i % D))/s$i" "$pristine/d$((i % D))/s$i" || t_fail "$s: static file s$i differs"
  done
  for d in 3 8 13 18; do cmp -s "$s/d$d/big" "$pristine/d$d/big" || t_fail "$s: d$d/big differs"; done
  r_verify "$s"
  # a state taken inside a change the mutator stretched is marked with a "~"
  if ((stalls)); then echo "$j~"; else echo "$j"; fi
}

# Pauses of 10-49 ms, and of 150 ms after every 25th object: longer than the quiet window the
# captures below use (--quiet-ms 100), so that a cut can fall there, mid-sequence.
mutator() {
  for k in $(seq 0 $((M - 1))); do
    mutate "$k"
    if ((k % 25 == 24)); then sleep 0.15; else sleep "0.0$((RANDOM % 40 + 10))"; fi
  done
}
mutator &
mpid=$!; T_PIDS+=("$mpid")
done_mutating() { ! r_alive "$mpid"; }
n=0 ok=0 unsettled=0 states=()
while :; do
  last=0; done_mutating && last=1
  n=$((n + 1)); snap=$T_WORK/snap$n
  rc=0; "$STILLCTL" snapshot -q --quiet-ms "$Q" --settle-timeout 20 "$store" "$snap" 2>"$T_WORK/err" || rc=$?
  case $rc in
    0) ok=$((ok + 1)); states+=("$(judge "$snap")") ;;
    3) unsettled=$((unsettled + 1)); [ ! -e "$snap" ] || t_fail "unsettled capture published $snap" ;;
    *) cat "$T_WORK/err" >&2; t_fail "capture $n failed with exit $rc" ;;
  esac
  rm -rf "$snap"
  r_no_leftovers "$T_WORK"
  ((last == 0)) || break
done
wait "$mpid" || t_fail "the mutator failed"; T_PIDS=()
[ "${states[-1]}" = "$M" ] || t_fail "the snapshot after the last mutation is not the final state"
((ok >= 2)) || t_fail "only $ok captures succeeded"
echo "# $n captures while $M objects changed: $ok published (states j = ${states[*]} of $M), $unsettled unsettled; all one real state"

# The store directory removed during a capture. The files were just written, so with a long
# quiet window the capture, once it has staged sub/a, waits about 2 s for the store to be still
# before its cut: time enough to see it busy however fast it copies (without it a capture of
# these 180 MiB (by default) could be published between two looks, and the wait below never end).
rm -rf "$store"; mkdir -p "$store/sub"
for d in a b c; do (yes "$d" || true) | head -c "$((BIG * 3 / 2))M" >"$store/sub/$d"; done
echo x >"$store/top"
"$STILLCTL" snapshot -q --quiet-ms 2000 "$store" "$T_WORK/gone" 2>"$T_WORK/err" &
snapper=$!; T_PIDS+=("$snapper")
busy() { compgen -G "$T_WORK/.gone.stillfs-tmp.*/sub/a" >/dev/null; }
t_wait_for 60 busy
rm -rf "$store"
rc=0; wait "$snapper" || rc=$?; T_PIDS=()
# Listing a removed directory that is still open gives no entries: publishing that as an
# empty snapshot would have an uploader's sync --delete wipe every copy of the store.
((rc != 0)) || t_fail "the store was removed during the capture, yet a snapshot was published"
[ ! -e "$T_WORK/gone" ] || t_fail "the store was removed, yet a snapshot was published"
grep -q "vanished" "$T_WORK/err" || { cat "$T_WORK/err" >&2; t_fail "the failure does not say the store vanished"; }
removed="failed with exit $rc: $(tail -n 1 "$T_WORK/err")"
r_no_leftovers "$T_WORK"

# The store directory renamed during a capture: the capture follows the directory.
mkdir -p "$store/sub"; for d in a b; do (yes "$d" || true) | head -c "$((BIG * 3 / 2))M" >"$store/sub/$d"; done
echo x >"$store/top"
"$STILLCTL" snapshot -q --quiet-ms 2000 "$store" "$T_WORK/moved" 2>"$T_WORK/err" &
snapper=$!; T_PIDS+=("$snapper")
busy2() { compgen -G "$T_WORK/.moved.stillfs-tmp.*/sub/a" >/dev/null; }
t_wait_for 60 busy2
mv "$store" "$T_WORK/store-renamed"
rc=0; wait "$snapper" || rc=$?; T_PIDS=()
((rc == 0)) || { cat "$T_WORK/err" >&2; t_fail "capture of a renamed store failed ($rc)"; }
r_same_tree "$T_WORK/store-renamed" "$T_WORK/moved" "the capture of a renamed store differs from it"
r_verify "$T_WORK/moved"
echo "# store removed mid-capture: $removed; store renamed mid-capture: captured whole"
