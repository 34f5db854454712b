#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stillctl status as a probe, its JSON form, and the Prometheus metrics:
# - before any capture: exit 0, but exit 6 with --max-age (no generation);
# - after a capture: exit 0 with --max-age 3600, exit 6 once the generation is older than
#   --max-age; the JSON (stillctl status --json and MOUNTPOINT/.stillfs-status.json) has
#   "schema": 1, exactly the fields stillctl(1) documents, each of its documented type;
# - a capture that fails (a writer that never lets the store settle): refresh exits 3, status
#   exits 5 and names the error; the next good capture brings it back to 0; while it runs, the
#   status shows its progress (phase, files and bytes done of total, retries);
# - -o metrics_file is there from the start and rewritten after each capture, and both it and
#   stillctl metrics are valid Prometheus text (HELP and TYPE before samples, stillfs_*
#   names, counters named *_total, numeric values).
source "$(dirname "$0")/lib.sh"
man=$(dirname "$0")/../../docs/stillctl.1
store=$T_WORK/store mnt=$T_WORK/mnt prom=$T_WORK/prom
mkdir -p "$store" "$mnt" "$prom"
echo hello >"$store/f"
python3 -c "import sqlite3; c = sqlite3.connect('$store/db.sqlite'); c.execute('create table t(x)'); c.execute('insert into t values (1)'); c.commit()"

t_mount "$store" "$mnt" -o "metrics_file=$prom/stillfs.prom,settle_timeout=2"

# status exits with rc; its stderr is kept in $T_WORK/err.
status_rc() { local rc=0; "$STILLCTL" status "$@" >"$T_WORK/out" 2>"$T_WORK/err" || rc=$?; echo "$rc"; }

[ "$(status_rc "$mnt")" = 0 ] || t_fail "status before any capture: not 0: $(cat "$T_WORK/err")"
[ "$(status_rc --max-age 3600 "$mnt")" = 6 ] || t_fail "status --max-age without a generation is not 6"
grep -q "no generation" "$T_WORK/err" || t_fail "status --max-age did not say why: $(cat "$T_WORK/err")"
[ "$(status_rc --max-age x "$mnt")" = 2 ] || t_fail "status --max-age x is not a usage error"
# Written right after the mount comes up, not before.
prom_there() { [ -f "$prom/stillfs.prom" ]; }
t_wait_for 10 prom_there
grep -q '^stillfs_captures_total{.*result="ok"} 0$' "$prom/stillfs.prom" ||
  t_fail "the first metrics file does not count 0 captures"

"$STILLCTL" refresh "$mnt" >/dev/null || t_fail "refresh failed"
[ "$(status_rc --max-age 3600 "$mnt")" = 0 ] || t_fail "status --max-age 3600 after a capture: $(cat "$T_WORK/err")"
age_past() { awk -v a="$2" '$1 == "age_s:" { exit !($2 > a) }' "$1/.stillfs-status"; }
t_wait_for 10 age_past "$mnt" 0.3
[ "$(status_rc --max-age 0.2 "$mnt")" = 6 ] || t_fail "a generation older than --max-age is not exit 6"

# JSON: the same fields as documented, typed. The man page lists them in its JSON table as
# ".B name" lines followed by a type word (see STATUS FIELDS in stillctl.1).
"$STILLCTL" status --json "$mnt" >"$T_WORK/status.json" || t_fail "status --json failed"
cat "$mnt/.stillfs-status.json" >"$T_WORK/file.json"
python3 - "$T_WORK/status.json" "$T_WORK/file.json" "$man" <<'EOF' || t_fail "the JSON status does not match its documented schema"
import json, re, sys
docs = {}
lines = open(sys.argv[3]).read().split("\n")
sec = [i for i, l in enumerate(lines) if l.startswith(".SH STATUS FIELDS")]
assert sec, "no STATUS FIELDS section in stillctl.1"
for i in range(sec[0] + 1, len(lines)):
    if lines[i].startswith(".SH"):
        break
    m = re.match(r'^\.BR? (\S+) " \((string|integer|number|boolean)\)', lines[i])
    if m:
        docs[m.group(1).replace("\\", "")] = m.group(2)
assert len(docs) > 20, "too few documented fields: %r" % docs
kinds = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}
for path in sys.argv[1:3]:
    d = json.load(open(path))
    assert d["schema"] == 1, d["schema"]
    assert set(d) == set(docs), "fields %s undocumented, %s documented but absent" % (
        sorted(set(d) - set(docs)), sorted(set(docs) - set(d)))
    for k, v in d.items():
        if v is None:
            continue
        ok = kinds[docs[k]]
        assert isinstance(v, ok) and (docs[k] == "boolean" or not isinstance(v, bool)), (k, v, docs[k])
    assert d["generation"] == 1 and d["last_capture"] == "ok" and d["captures_ok"] == 1, d
    assert d["files"] == 2 and d["store"].endswith("/store") and d["last_error"] is None, d
EOF

# Prometheus text: what a scraper requires of it.
prom_ok() {
  python3 - "$1" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
assert text.endswith("\n")
helped, typed, seen = set(), {}, set()
for line in text.splitlines():
    m = re.match(r"^# HELP (\S+) \S", line)
    if m:
        assert m.group(1) not in helped, "two HELP lines for " + m.group(1)
        helped.add(m.group(1)); continue
    m = re.match(r"^# TYPE (\S+) (counter|gauge)$", line)
    if m:
        typed[m.group(1)] = m.group(2); continue
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\} (\S+)$', line)
    assert m, "not a sample line: " + line
    name = m.group(1)
    assert name.startswith("stillfs_"), name
    assert name in helped and name in typed, "sample before HELP/TYPE: " + name
    assert typed[name] != "counter" or name.endswith("_total"), name
    float(m.group(3))
    assert (name, m.group(2)) not in seen, "duplicate sample " + line
    seen.add((name, m.group(2)))
for n in ("stillfs_captures_total", "stillfs_generation_age_seconds", "stillfs_generation_lock_hold_seconds",
          "stillfs_generation_copied_bytes", "stillfs_generation_shared_bytes", "stillfs_snapshot_open_handles",
          "stillfs_descriptors", "stillfs_last_attempt_seconds"):
    assert n in {s[0] for s in seen}, "no sample of " + n
EOF
}
"$STILLCTL" metrics "$mnt" >"$T_WORK/metrics" || t_fail "stillctl metrics failed"
prom_ok "$T_WORK/metrics" || t_fail "stillctl metrics is not valid Prometheus text"
has_sample() { grep -q "^$2" "$1"; }
t_wait_for 5 has_sample "$prom/stillfs.prom" 'stillfs_captures_total{.*result="ok"} 1$'
prom_ok "$prom/stillfs.prom" || t_fail "the metrics file is not valid Prometheus text"

# A store that never holds still: the capture fails, and status says so.
t_bg bash -c "while :; do echo x >>'$store/busy'; sleep 0.05; done"
writer=$!
"$STILLCTL" refresh "$mnt" >/dev/null 2>&1 &
refresh=$!
# Meanwhile the status shows the capture's progress.
progress_shown() {
  "$STILLCTL" status --json "$mnt" >"$T_WORK/progress.json" 2>/dev/null || true
  python3 - "$T_WORK/progress.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if d["capturing"] and d["progress_phase"] else 1)
EOF
}
t_wait_for 10 progress_shown
python3 - "$T_WORK/progress.json" <<'EOF' || t_fail "the progress of the running capture is not reported"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["progress_phase"] in ("scan", "copy", "cut", "publish"), d
for k in ("files_done", "files_total", "bytes_done", "bytes_total", "retries"):
    assert isinstance(d["progress_" + k], int), (k, d)
assert d["progress_files_total"] >= 3 and d["progress_files_done"] <= d["progress_files_total"], d
EOF
cat "$T_WORK/progress.json" >&2
rc=0; wait "$refresh" || rc=$?
[ "$rc" = 3 ] || t_fail "refresh of a store that never settles exited $rc, not 3"
grep -q '^progress_' "$mnt/.stillfs-status" && t_fail "progress is still reported after the capture ended"
[ "$(status_rc "$mnt")" = 5 ] || t_fail "status after a failed capture is not 5"
grep -q "the last capture failed" "$T_WORK/err" || t_fail "status did not say the capture failed: $(cat "$T_WORK/err")"
"$STILLCTL" status --json "$mnt" >"$T_WORK/failed.json" 2>/dev/null || true
python3 - "$T_WORK/failed.json" <<'EOF' || t_fail "the JSON status does not show the failed capture"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["last_capture"] == "failed" and d["captures_failed"] == 1 and d["generation"] == 1, d
assert d["last_error"], d
EOF
t_wait_for 5 has_sample "$prom/stillfs.prom" 'stillfs_last_capture_success{[^}]*} 0$'
grep -q '^stillfs_captures_total{.*result="failed"} 1$' "$prom/stillfs.prom" ||
  t_fail "the metrics file does not count the failed capture"
kill "$writer"; wait "$writer" 2>/dev/null || true

"$STILLCTL" refresh "$mnt" >/dev/null || t_fail "refresh after the writer stopped failed"
[ "$(status_rc --max-age 3600 "$mnt")" = 0 ] || t_fail "status after a good capture again: $(cat "$T_WORK/err")"
t_wait_for 5 has_sample "$prom/stillfs.prom" 'stillfs_last_capture_success{[^}]*} 1$'
ls -a "$mnt" | grep -q stillfs-status && t_fail "a status file is listed in the mount's root"
ls -a "$prom" | grep -qv '^\.\.\?$\|^stillfs.prom$' && t_fail "the metrics directory holds leftovers: $(ls -a "$prom")"

t_unmount "$mnt"
t_log_clean "$T_DAEMON_LOG" 'capture failed|no consistent cut|kept changing|still changing|busy'
echo "ok: status probe, JSON schema, metrics"
