#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A store's owner (an unprivileged user made with useradd) names the files that keep a root
# daemon (-o allow_other) from capturing: those names end up in the detailed status that
# root and the owner read. Whatever bytes they hold (here: invalid UTF-8, a quote, a
# backslash, a control byte), `stillctl status --json` and .stillfs-status.json stay strict
# JSON (UTF-8, as RFC 8259 requires) and the name is still recognisable in it; the metrics
# stay valid Prometheus text; and the status text root's terminal shows, like the daemon's
# log, holds no terminal control: neither C0 nor C1 (U+009B is CSI, as is a lone byte 0x9b
# to a terminal that is not in UTF-8), nor bytes that are not UTF-8.
source "$(dirname "$0")/lib.sh"
: "${STILLFS:?}" "${STILLCTL:?}"
t_attacker sfst
# The store's own name is the user's choice too (a directory they named, served by root):
# a newline in it must not add a line, here one that would pass the failed capture for ok.
store=$T_WORK/$'store\nlast_capture: ok\x9b' mnt=$T_WORK/mnt
mkdir -p "$store" "$mnt"
echo data >"$store/file"
chown -R "$user:$user" "$store"
t_mount "$store" "$mnt" -o auto_unmount,allow_other,settle_timeout=1,snapshot_max_age=3600,metrics_file="$T_WORK/stillfs.prom"

# The owner's writer: one file, rewritten without pause, whose name is hostile.
name=$'busy\xff\xfe"q\\\x01\xc2\x9b2J\x9b'
# (setpriv itself in the background, not the as_user function: a subshell would stand
# between the cleanup's signal and the writer.)
t_bg setpriv --reuid "$user" --regid "$user" --init-groups -- bash -c 'while :; do echo x >>"$1"; sleep 0.02; done' writer "$store/$name"
rc=0; "$STILLCTL" refresh "$mnt" >/dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || t_fail "refresh of a store kept busy exited $rc, not 3"
t_status "$mnt" last_error | grep -q 'busy' || t_fail "the busy file is not named: $(t_status "$mnt" last_error)"

"$STILLCTL" status --json "$mnt" >"$T_WORK/root.json" || true
as_user cat "$mnt/.stillfs-status.json" >"$T_WORK/owner.json" || t_fail "the owner cannot read the JSON status"
"$STILLCTL" metrics "$mnt" >"$T_WORK/metrics" || t_fail "stillctl metrics failed"
python3 - "$T_WORK/root.json" "$T_WORK/owner.json" <<'PY' || t_fail "the JSON status is not strict JSON"
import json, sys
for p in sys.argv[1:]:
    raw = open(p, "rb").read()
    try:
        d = json.loads(raw.decode("utf-8"))   # strict: bytes that are not UTF-8 fail here
    except Exception as e:
        sys.exit("%s: %s: %r" % (p, e, raw[-400:]))
    err = d["last_error"]
    assert "busy" in err and "\\xff\\xfe" in err, (p, err)
PY
python3 - "$T_WORK/metrics" "$T_WORK/stillfs.prom" <<'PY' || t_fail "the metrics are not UTF-8 text"
import sys
for p in sys.argv[1:]:
    open(p, "rb").read().decode("utf-8")
PY
[ "$(grep -c '^last_capture:' "$mnt/.stillfs-status")" = 1 ] ||
  t_fail "the store's name added a line to the status: $(head -n 8 "$mnt/.stillfs-status")"
t_status "$mnt" store >"$T_WORK/status.txt"
t_status "$mnt" last_error >>"$T_WORK/status.txt"
python3 - "$T_WORK/status.txt" "$T_DAEMON_LOG" <<'PY' || t_fail "a name put a terminal control in the status text or the log"
import re, sys
for p in sys.argv[1:]:
    text = open(p, "rb").read().decode("utf-8")   # not UTF-8: fails
    bad = re.findall(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
    assert not bad, (p, bad)
    assert "busy" in text, p
PY
t_log "OK"
