#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# inotify queue overflow: thousands of files change at once while a capture runs. The capture's
# inotify queue is shrunk to 16 events (fs.inotify.max_queued_events, read when the queue is
# created, restored as soon as stillctl has made it, and on exit), and a burst appends to 5,000
# files and then creates a directory of 1,000 more while a big file is being copied (no event
# is read meanwhile; the capture is stopped for the first 100 appends), so the queue overflows. The capture must then distrust everything: the
# snapshot is one real state of the burst (a prefix of it, in order), every byte as in that
# state, and it verifies. The proof that the overflow path ran: the big file, never changed,
# was copied twice (bytes_copied in the manifest).
# The big file need not outlast the burst: the stopped capture's queue overflows whatever its
# size, and copying it twice is the proof.
# env: REL_OVERFLOW_BIG_MB (default 100), the size of the big file.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rel-lib.sh"
knob=/proc/sys/fs/inotify/max_queued_events
[ -w "$knob" ] || { echo "SKIP: cannot write $knob" >&2; exit 77; }
old_max=$(cat "$knob")
trap 'rc=$?; echo "$old_max" >"$knob"; (exit $rc); t_cleanup' EXIT
N=5000 NEW=1000
store=$T_WORK/store
mkdir -p "$store"/g{0..9} "$store/big"
for i in $(seq 0 $((N - 1))); do printf 'file %d gen 1\n' "$i" >"$store/g$((i % 10))/f$i"; done
(yes "never changes" || true) | head -c "${REL_OVERFLOW_BIG_MB:-100}M" >"$store/big/big.bin"
big=$(stat -c %s "$store/big/big.bin")

echo 16 >"$knob"
"$STILLCTL" snapshot -q "$store" "$T_WORK/snap" 2>"$T_WORK/err" &
snapper=$!; T_PIDS+=("$snapper")
queue_made() { compgen -G "$T_WORK/.snap.stillfs-work.*/m63" >/dev/null; }
t_wait_for 30 queue_made
echo "$old_max" >"$knob"
copying_big() { compgen -G "$T_WORK/.snap.stillfs-tmp.*/big/big.bin" >/dev/null; }
t_wait_for 60 copying_big
# The first appends are made while the capture is stopped, so they overflow its queue however
# fast it copies; the rest of the burst runs alongside it.
kill -STOP "$snapper"
for i in $(seq 0 99); do echo "gen 2" >>"$store/g$((i % 10))/f$i"; done
kill -CONT "$snapper"
for i in $(seq 100 $((N - 1))); do echo "gen 2" >>"$store/g$((i % 10))/f$i"; done
mkdir "$store/new"
for i in $(seq 0 $((NEW - 1))); do printf 'new %d\n' "$i" >"$store/new/n$i"; done
r_alive "$snapper" || t_log "warning: the capture ended before the burst did"
rc=0; wait "$snapper" || rc=$?; T_PIDS=()
((rc == 0)) || { cat "$T_WORK/err" >&2; t_fail "capture under an overflowing queue failed ($rc)"; }

# One real state: the first m appends (m = N if the directory exists), the first c new files.
snap=$T_WORK/snap
m=0
for i in $(seq 0 $((N - 1))); do
  got=; IFS= read -r -d '' got <"$snap/g$((i % 10))/f$i" || true
  case $got in
    "file $i gen 1"$'\n') ;;
    "file $i gen 1"$'\n'"gen 2"$'\n') ((m == i)) || t_fail "f$i appended in the snapshot, f$m not: not one instant"; m=$((i + 1)) ;;
    *) t_fail "f$i is neither as before nor as after its append" ;;
  esac
done
c=0
if [ -d "$snap/new" ]; then
  ((m == N)) || t_fail "new/ is in the snapshot but not every append before it"
  while [ -f "$snap/new/n$c" ]; do
    [ "$(cat "$snap/new/n$c")" = "new $c" ] || t_fail "new/n$c has the wrong content"
    c=$((c + 1))
  done
  [ "$(ls "$snap/new" | wc -l)" = "$c" ] || t_fail "new files in the snapshot are not a prefix of the burst"
fi
cmp -s "$store/big/big.bin" "$snap/big/big.bin" || t_fail "big.bin differs"
r_verify "$snap"
copied=$(awk '$1 == "bytes_copied" {print $2}' "$snap/.stillfs-manifest")
((copied >= 2 * big)) || t_fail "bytes_copied $copied: big.bin was not copied again, so the overflow was not handled (or did not happen)"
echo "# queue of 16 overflowed by $N appends + $NEW creations mid-capture: snapshot = the burst's first $m appends and $c creations; verified; bytes_copied $copied (big file copied twice)"
