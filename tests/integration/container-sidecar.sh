#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Kubernetes sidecar of docs/DEPLOYMENT.md, run with real containers: podman kube play of
# packaging/container/pod.yaml. The stillfs and uploader containers run exactly as the manifest
# writes them (commands, privileged securityContext, /dev/fuse, Bidirectional and
# HostToContainer mount propagation); the test replaces only the images (built here from
# packaging/container/Containerfile, no registry), the volume sources (host directories it can
# look into), the pod's name, the ConfigMap's values (the local S3 server), and the application
# container, which becomes the torture writer. The pod shares the host's network to reach
# s3rver on 127.0.0.1.
#   - the stillfs mount propagates to the host and into the uploader, whose `aws s3 sync` of
#     .snapshot completes;
#   - stopping the stillfs container unmounts: neither the host, the propagation peer of the
#     shared volume, nor the running uploader is left with a stale mount; the daemon exits 0 by
#     itself within the stop timeout (no process left to kill) and keeps its last generation;
#   - restarted, its new mount reaches the running uploader, whose next syncs upload the new
#     daemon's generation; that upload, downloaded again, passes `stillctl verify` and
#     `torture check --strict`;
#   - the writer never notices: it keeps committing through both stops, and exits 0.
# It must fail with STILLFS_SIDECAR_BREAK=live (the uploader syncs the live view instead of
# .snapshot), =propagation (no propagation into the uploader: at most a copy of the mount
# made before it started) or =noexec (the daemon is not the container's first process, so a
# stop does not reach it: killed, it leaves a dead mount).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3-lib.sh"
: "${TORTURE:?}"
repo=$(cd "$(dirname "$0")/../.." && pwd)
export CONTAINERS_CONF=$repo/tests/containers/containers.conf
manifest=$repo/packaging/container/pod.yaml
BUCKET=stillfs

# Skip only where podman cannot run containers here (under CI, where setup.sh installed
# everything, fail instead).
skip() {
  [ -n "${CI:-}" ] || [ -n "${STILLFS_REQUIRE_PEERS:-}" ] && t_fail "$*"
  echo "SKIP: $*" >&2
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (privileged containers, /dev/fuse, shared mounts)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
for c in podman runc catatonit mmdebstrap; do
  command -v "$c" >/dev/null 2>&1 || skip "$c is not installed (scripts/setup.sh installs it)"
done
podman info >/dev/null 2>&1 || skip "podman cannot run here: $(podman info 2>&1 | tail -n 1)"
s3_require_peers

start=$SECONDS
stillfs_img=$("$repo/tests/containers/stillfs-image.sh" runtime) || t_fail "cannot build the stillfs image"
app_img=$("$repo/tests/containers/stillfs-image.sh" torture) || t_fail "cannot build the torture image"
aws_img=$("$repo/tests/containers/base-image.sh" bookworm awscli) || t_fail "cannot build the uploader image"
t_log "images ready in $((SECONDS - start)) s: $stillfs_img, $app_img, $aws_img"

POD=stillfs-test-sidecar-$$
pod_logs() {
  local c
  for c in app stillfs uploader; do
    echo "--- $POD-$c:" >&2
    podman logs "$POD-$c" 2>&1 | tail -n 20 >&2 || true
  done
}
sidecar_cleanup() {
  local rc=$?
  ((rc == 0)) || pod_logs
  podman pod rm -f -t 5 "$POD" >/dev/null 2>&1 || true
  # t_cleanup takes the test's status from $?; set -e must not end the trap on the way.
  set +e
  (exit "$rc")
  t_cleanup
}
trap sidecar_cleanup EXIT

# The store, with some committed work in it before the pod starts, so that the first
# generation already holds data.
store=$T_WORK/store
"$TORTURE" init "$store" >/dev/null
"$TORTURE" write --seconds 1 --persist-interval 100 "$store" >/dev/null || t_fail "the first writes failed"
# The newest record in the live database. A writer that commits back to back can keep a reader
# out past its busy timeout on a loaded machine: try again until it gets in.
seq_now() {
  local v deadline=$((SECONDS + 120))
  until v=$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" \
              'select coalesce(max(seq), 0) from embeddings_queue' 2>"$T_WORK/seq.err"); do
    ((SECONDS < deadline)) || t_fail "the live database stayed locked for 120 s: $(cat "$T_WORK/seq.err")"
  done
  echo "$v"
}
# The volume stillfs mounts in: a shared mount, as kubelet's pod volumes are, so that the
# mount made in one container reaches the host and the other containers.
snapdir=$T_WORK/snapshots
mkdir -p "$snapdir" "$T_WORK/cache"
mount --bind "$snapdir" "$snapdir"; T_MOUNTS+=("$snapdir")
mount --make-rshared "$snapdir"

s3_start -- "$BUCKET"

# The manifest, as the test runs it. Every replacement must apply exactly once.
POD=$POD STORE=$store SNAPDIR=$snapdir CACHE=$T_WORK/cache BUCKET=$BUCKET S3_ENDPOINT=$S3_ENDPOINT \
STILLFS_IMG=$stillfs_img APP_IMG=$app_img AWS_IMG=$aws_img BREAK=${STILLFS_SIDECAR_BREAK:-} \
python3 - "$manifest" "$T_WORK/pod.yaml" <<'EOF' || t_fail "cannot adapt $manifest"
import os, re, sys
e = os.environ
text = open(sys.argv[1]).read()
def sub(pattern, repl, what):
    global text
    text, n = re.subn(pattern, lambda m: repl, text, flags=re.M)
    if n != 1:
        sys.exit(f"{what}: {n} matches in the manifest, expected 1")
sub(r"^data:\n(  .*\n)+(?=---\n)", f"""data:
  BUCKET: {e['BUCKET']}
  PREFIX: store/
  INTERVAL: "1"
  AWS_ENDPOINT_URL: {e['S3_ENDPOINT']}
  AWS_ACCESS_KEY_ID: {e['AWS_ACCESS_KEY_ID']}
  AWS_SECRET_ACCESS_KEY: {e['AWS_SECRET_ACCESS_KEY']}
  AWS_REGION: us-east-1
  AWS_EC2_METADATA_DISABLED: "true"
""", "ConfigMap data")
sub(r"(?<=^kind: Pod\nmetadata:\n  name: )\S+$", e["POD"], "pod name")
for vol, path in (("data", e["STORE"]), ("snapshots", e["SNAPDIR"]), ("cache", e["CACHE"])):
    sub(r"^    - \{ name: %s, .*\}$" % vol,
        "    - { name: %s, hostPath: { path: %s, type: Directory } }" % (vol, path), "volume " + vol)
for c, image in (("stillfs", e["STILLFS_IMG"]), ("uploader", e["AWS_IMG"])):
    sub(r"(?<=^    - name: %s\n      image: )\S+" % c, image, "image of " + c)
sub(r"^    - name: app\n[\s\S]*?(?=^    - name: )", f"""    - name: app
      image: {e['APP_IMG']}
      volumeMounts:
        - {{ name: data, mountPath: /data }}
      command: [ "torture", "write", "--persist-interval", "1000", "/data" ]
""", "the application container")
if e["BREAK"] == "live":
    sub(r"sync /snapshots/chroma/\.snapshot ", "sync /snapshots/chroma ", "break: live")
elif e["BREAK"] == "propagation":
    sub(r"mountPropagation: HostToContainer", "mountPropagation: None", "break: propagation")
elif e["BREAK"] == "noexec":
    sub(r"exec stillfs ", "stillfs ", "break: noexec")
elif e["BREAK"]:
    sys.exit(f"unknown STILLFS_SIDECAR_BREAK {e['BREAK']}")
open(sys.argv[2], "w").write(text)
EOF
[ -z "${STILLFS_SIDECAR_BREAK:-}" ] || t_log "BROKEN ON PURPOSE: $STILLFS_SIDECAR_BREAK"
# compose.yaml (not run here: no compose tool) must run the very scripts this test runs.
python3 - "$manifest" "$repo/packaging/container/compose.yaml" <<'EOF' || t_fail "compose.yaml and pod.yaml differ"
import re, sys
def scripts(path, name_re, unescape):
    out, name, lines = {}, None, open(path).read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(name_re, lines[i])
        if m:
            name = m.group(1)
        m = re.match(r"^( *)- \|$", lines[i])
        if m and name:
            body, i = [], i + 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(m.group(1))):
                body.append(lines[i])
                i += 1
            ind = min(len(l) - len(l.lstrip()) for l in body if l.strip())
            out[name] = unescape("\n".join(l[ind:] for l in body).strip())
            continue
        i += 1
    return out
pod = scripts(sys.argv[1], r"^    - name: (\S+)$", lambda s: s)
compose = scripts(sys.argv[2], r"^  ([\w-]+):$", lambda s: s.replace("$$", "$"))
for c in ("stillfs", "uploader"):
    if c not in pod or pod.get(c) != compose.get(c):
        sys.exit(f"the {c} script of compose.yaml is not the one of pod.yaml")
EOF
# And docs/DEPLOYMENT.md's excerpts of them must be lines of them, as they are ("..." skips).
python3 - "$repo" <<'EOF' || t_fail "docs/DEPLOYMENT.md quotes the container files wrongly"
import re, sys
doc = open(sys.argv[1] + "/docs/DEPLOYMENT.md").read()
blocks = re.findall(r"^```yaml\n# (packaging/container/\S+) \(excerpt\)\n(.*?)^```$", doc, re.M | re.S)
if len(blocks) < 2:
    sys.exit("docs/DEPLOYMENT.md: the excerpts of compose.yaml and pod.yaml are gone")
for path, body in blocks:
    have = set(open(sys.argv[1] + "/" + path).read().split("\n"))
    for line in body.rstrip("\n").split("\n"):
        if line not in have and line.strip() != "...":
            sys.exit(f"docs/DEPLOYMENT.md: not a line of {path}: {line.strip()}")
EOF

start=$SECONDS
podman kube play --network host "$T_WORK/pod.yaml" >"$T_WORK/play.out" 2>&1 ||
  { cat "$T_WORK/play.out" >&2; t_fail "podman kube play failed"; }
state() { podman inspect -f "{{.State.$2}}" "$POD-$1"; }
in_uploader() { podman exec "$POD-uploader" sh -c "$1"; }
mounted_in_uploader() { in_uploader "grep -q ' - fuse.stillfs ' /proc/self/mountinfo"; }
# Gone from the uploader's view, not left there dead ("Transport endpoint is not connected").
unmounted_in_uploader() { in_uploader "! grep -q ' - fuse.stillfs ' /proc/self/mountinfo && ls /snapshots/chroma >/dev/null"; }
syncs() { podman logs "$POD-uploader" 2>&1 | grep -c '^uploader: synced' || true; }
synced() { (($(syncs) >= $1)); }
progressed() { (($(seq_now) > $1)); }

# stop_sidecar N: the Nth stop of the stillfs container: SIGTERM to the daemon, which must
# unmount and exit 0 by itself (podman would kill it after the timeout), keep its last
# generation, and leave no mount in the host's view of the shared volume (its propagation peer).
stop_sidecar() {
  local n=$1 pid t0=$SECONDS
  pid=$(state stillfs Pid)
  podman stop -t 30 "$POD-stillfs" >/dev/null
  ((SECONDS - t0 < 30)) || t_fail "stop $n: the daemon did not stop within the timeout (killed)"
  [ "$(state stillfs ExitCode)" = 0 ] || t_fail "stop $n: the stillfs container exited with $(state stillfs ExitCode)"
  kill -0 "$pid" 2>/dev/null && t_fail "stop $n: the daemon (pid $pid) is still running"
  podman logs "$POD-stillfs" >"$T_WORK/daemon.log" 2>&1
  [ "$(grep -c '^stillfs: unmounting /snapshots/chroma$' "$T_WORK/daemon.log")" = "$n" ] ||
    t_fail "stop $n: the daemon did not unmount"
  # This daemon's (the log's last) generation, if it made one, is kept for the next start.
  awk '/^stillfs: serving /{ ready = kept = 0 } / ready in /{ ready = 1 }
       /kept in the cache for the next start/{ kept = 1 } END { exit !(ready <= kept) }' "$T_WORK/daemon.log" ||
    t_fail "stop $n: the daemon did not keep its last generation"
  t_log_clean "$T_WORK/daemon.log"
  grep -q " $snapdir/chroma .* - fuse" /proc/self/mountinfo && t_fail "stop $n: stale mount at $snapdir/chroma on the host"
  ls "$snapdir/chroma" >/dev/null || t_fail "stop $n: $snapdir/chroma is not accessible after the unmount"
}

# Bidirectional: the mount made in the stillfs container reaches the host's volume directory;
# HostToContainer: and the uploader's mount of it.
t_wait_for 30 t_is_stillfs "$snapdir/chroma"
t_wait_for 10 mounted_in_uploader
t_wait_for 60 synced 1
t_log "pod up, mount propagated to host and uploader, first sync done in $((SECONDS - start)) s"

# The sidecar stops while the uploader and the writer go on. The unmount must reach the
# uploader too (a container that only got a copy of the mount at its start keeps a dead one).
seq_at_stop=$(seq_now)
stop_sidecar 1
t_wait_for 10 unmounted_in_uploader
t_log "first stop done, $((SECONDS - start)) s"
[ "$(state app Running)" = true ] || t_fail "the writer stopped with the sidecar"
t_wait_for 30 progressed "$seq_at_stop"
seq_at_stop=$(seq_now)
# A restarted sidecar: its new mount must reach the running uploader, whose next syncs upload
# the new daemon's first generation (captured now, so it holds records the first one did not).
podman start "$POD-stillfs" >/dev/null
t_wait_for 30 t_is_stillfs "$snapdir/chroma"
t_wait_for 10 mounted_in_uploader
t_wait_for 60 synced $(($(syncs) + 2))
t_log "stillfs stopped and restarted under the running uploader and writer; $(syncs) syncs so far, $((SECONDS - start)) s"

# The uploader stops after the sync it may be in (its trap), so the bucket holds whole syncs.
podman stop -t 60 "$POD-uploader" >/dev/null
[ "$(state uploader ExitCode)" = 0 ] || t_fail "the uploader exited with $(state uploader ExitCode)"
dl=$T_WORK/download
s3_aws s3 sync --no-progress "s3://$BUCKET/store/" "$dl" >/dev/null 2>"$T_WORK/dl.err" ||
  { cat "$T_WORK/dl.err" >&2; t_fail "download failed"; }
"$TORTURE" check "$dl" >"$T_WORK/check.out" 2>&1 ||
  { cat "$T_WORK/check.out" >&2; t_fail "the download is not one consistent instant"; }
"$TORTURE" check --strict "$dl" >"$T_WORK/check.out" 2>&1 ||
  { cat "$T_WORK/check.out" >&2; t_fail "the download's databases are not self-contained"; }
"$STILLCTL" verify "$dl" >"$T_WORK/verify.out" 2>&1 ||
  { cat "$T_WORK/verify.out" >&2; t_fail "the download does not verify"; }
dl_seq=$(sqlite3 "file:$dl/chroma.sqlite3?immutable=1" 'select coalesce(max(seq), 0) from embeddings_queue')
((dl_seq > seq_at_stop)) ||
  t_fail "the download holds records up to $dl_seq only: not the restarted daemon's generation (records > $seq_at_stop)"
t_log "download (records up to $dl_seq) passes torture check --strict and stillctl verify, $((SECONDS - start)) s"

# The second stop, and the writer, which never noticed either: still committing, clean exit.
seq_at_stop=$(seq_now)
stop_sidecar 2
t_wait_for 30 progressed "$seq_at_stop"
podman stop -t 30 "$POD-app" >/dev/null
[ "$(state app ExitCode)" = 0 ] || t_fail "the writer exited with $(state app ExitCode)"
"$TORTURE" check "$store" >"$T_WORK/check.out" 2>&1 ||
  { cat "$T_WORK/check.out" >&2; t_fail "the live store is not consistent after the writer stopped"; }
echo "# sidecar pod (podman kube play of packaging/container/pod.yaml): $(syncs) syncs; stillfs" \
     "stopped twice cleanly (no stale mount on the host or in the uploader) and restarted under" \
     "the running uploader; download at record $dl_seq verified and consistent; writer went on" \
     "to record $(seq_now) and exited 0; $((SECONDS - start)) s after play"
