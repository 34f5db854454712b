#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The manifest names every entry of the store and holds a digest of every file, and a short
# secret's digest gives the secret away: stillfs serves `.snapshot/.stillfs-manifest` 0400 to
# the store's owner only (docs/SECURITY.md). Root's `stillctl snapshot STORE DEST` writes the
# same manifest 0444 at DEST's root, and DEST's root keeps the store root's mode (0755 here),
# so any local user reads the names in root's 0700 directory, which they cannot list, and the
# digest of root's 0600 four-digit PIN, which they cannot read, and finds the PIN in 10,000
# tries. The user must learn neither.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/reld-lib.sh"
: "${STILLCTL:?}"
[ "$(id -u)" = 0 ] || t_fail "needs root"
t_attacker sfmf
store=$T_WORK/store snaps=$T_WORK/snaps
mkdir -p "$store" "$snaps"
chmod 755 "$store" "$snaps"
mkdir -m 700 "$store/private"
pin=$(( 1000 + $(od -An -N2 -tu2 /dev/urandom) % 9000 ))
(umask 077 && echo "$pin" >"$store/private/pin-$pin-name")
as_user ls "$store/private" >/dev/null 2>&1 && t_fail "setup: the user can list root's 0700 directory"
as_user cat "$store/private/pin-$pin-name" >/dev/null 2>&1 && t_fail "setup: the user can read the PIN"
"$STILLCTL" snapshot -q "$store" "$snaps/s1" || t_fail "root's snapshot failed"
as_user ls "$snaps/s1/private" >/dev/null 2>&1 && t_fail "setup: the user can list the copy of root's 0700 directory"
problems=()
if as_user cat "$snaps/s1/.stillfs-manifest" >"$T_WORK/seen" 2>/dev/null; then
  grep -q "private/pin-$pin-name" "$T_WORK/seen" &&
    problems+=("the user read the name of a file in root's 0700 directory from the manifest ($(stat -c '%a %U' "$snaps/s1/.stillfs-manifest"))")
  found=$(as_user /usr/bin/python3 -c '
import hashlib, sys
digests = {l.split()[6] for l in open(sys.argv[1]) if l[:2] == "f "}
for n in range(10000):
    if hashlib.sha256(b"%d\n" % n).hexdigest() in digests:
        print(n)' "$T_WORK/seen")
  [ "$found" = "$pin" ] && problems+=("the user found root's PIN ($pin) from its digest in the manifest")
fi
if [ "${#problems[@]}" -gt 0 ]; then
  printf '%s\n' "${problems[@]}" >&2
  t_fail "${#problems[@]} problems: root's snapshot hands its manifest to every user"
fi
# The manifest is still there for root, and the snapshot verifies.
reld_verify "$snaps/s1" "root's snapshot"
echo "PASS: the manifest of root's snapshot tells other users nothing they cannot read"
