#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A database whose writer died mid-transaction is captured in its last committed state by
# recovering a private copy; the live store, hot journal included, is not touched.
source "$(dirname "$0")/lib.sh"
: "${TORTURE:?}"
store=$T_WORK/store; mkdir "$store"
"$TORTURE" hotjournal "$store" >/dev/null
[ -s "$store/hot.sqlite3-journal" ] || t_fail "setup left no hot journal"
state() { (cd "$store" && find . -printf '%p %s %T@ %C@\n' | sort && sha256sum ./*); }
before=$(state)
"$STILLCTL" snapshot -q "$store" "$T_WORK/snap" || t_fail "snapshot failed"
[ "$before" = "$(state)" ] || t_fail "the live store was modified"
[ ! -e "$T_WORK/snap/hot.sqlite3-journal" ] || t_fail "journal copied into the snapshot"
"$TORTURE" hotcheck "$T_WORK/snap" || t_fail "snapshot does not hold the committed state"
"$STILLCTL" verify "$T_WORK/snap" >/dev/null || t_fail "verify failed"
