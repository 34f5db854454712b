#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stillctl from the Lambda layer zip (ninja lambda-layer: bin/stillctl, the static build) on a
# system with an older C library than the build host's: a Debian 11 root file system (glibc
# 2.31; AWS Lambda's Amazon Linux 2023 has 2.34), entered with chroot. Inside it, consecutive
# snapshots of a store the torture writer keeps writing from outside (the store is bind-mounted
# in), each verified by stillctl inside and checked by torture outside. The negative control:
# the ordinary (dynamic) stillctl does not even start there.
source "$(dirname "$0")/lib.sh"
: "${TORTURE:?}"
if [ -z "${LAMBDA_LAYER:-}" ]; then
  echo "SKIP: stillctl-static is not built (static_stillctl disabled, a sanitizer build, or no static glibc or libsqlite3.a)"
  exit 77
fi
suite=bullseye
pkgs=libsqlite3-0   # only for the negative control: a dynamic stillctl gets as far as glibc

# ---- the root file system, made once and kept under /var/tmp (keyed by suite and packages) --
root=/var/tmp/stillfs-test-rootfs/$suite-$(printf '%s' "$pkgs" | sha256sum | cut -c1-8)
if [ ! -x "$root/bin/sh" ]; then
  if ! command -v mmdebstrap >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; } ||
      t_fail "mmdebstrap is missing and cannot be installed"
  fi
  start=$SECONDS
  mkdir -p "$(dirname "$root")"
  tmp=$(mktemp -d "$root.tmp.XXXXXX")
  mmdebstrap --variant=minbase --include="$pkgs" --quiet "$suite" "$tmp" ||
    { rm -rf "$tmp"; t_fail "mmdebstrap $suite failed"; }
  mv -T "$tmp" "$root" 2>/dev/null || rm -rf "$tmp"   # a run beside this one was first
  t_log "made the Debian $suite root file system $root in $((SECONDS - start)) s"
fi

# in_root CMD...: run CMD chrooted in the root file system, with $T_WORK/in bound at /mnt and
# /proc mounted (the engine names descriptors through /proc/self/fd), in a mount namespace of
# its own: nothing is mounted on the host and the kept root file system stays untouched.
mkdir "$T_WORK/in"
in_root() {
  unshare -m --propagation private sh -c \
    'r=$1 d=$2; shift 2; mount --bind "$d" "$r/mnt" && mount -t proc proc "$r/proc" && exec chroot "$r" "$@"' \
    sh "$root" "$T_WORK/in" "$@"
}

# ---- the layer: bin/stillctl, executable, static ---------------------------------------------
python3 - "$LAMBDA_LAYER" "$T_WORK/in/layer" <<'EOF' || t_fail "the Lambda layer zip is not bin/stillctl with mode 0755"
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
assert names == ["bin/stillctl"], names
info = z.getinfo("bin/stillctl")
assert (info.external_attr >> 16) & 0o777 == 0o755, oct(info.external_attr >> 16)
path = z.extract(info, sys.argv[2])
os.chmod(path, 0o755)
EOF
ctl=/mnt/layer/bin/stillctl
phdrs=$(readelf -l "$T_WORK/in/layer/bin/stillctl")
[[ $phdrs != *'program interpreter'* ]] || t_fail "the layer's stillctl is dynamically linked"
glibc=$(in_root /usr/bin/ldd --version)
glibc=${glibc%%$'\n'*}
t_log "in $suite: $glibc; $(in_root "$ctl" --version)"

# ---- negative control: the dynamic stillctl of this build --------------------------------------
cp "$STILLCTL" "$T_WORK/in/stillctl-dynamic"
if in_root /mnt/stillctl-dynamic --version >"$T_WORK/dyn.out" 2>&1; then
  t_fail "the dynamic stillctl runs in $suite: this test would prove nothing"
fi
# It needs a newer glibc and libcrypto.so.3 (bullseye has OpenSSL 1.1): the loader names one.
why="version \`GLIBC_2\.[0-9]*' not found|lib[a-z0-9]*\.so\.[0-9]*: cannot open shared object file"
grep -Eq "$why" "$T_WORK/dyn.out" ||
  { cat "$T_WORK/dyn.out" >&2; t_fail "the dynamic stillctl failed in $suite, but not for its libraries"; }
t_log "negative control: $(grep -m1 -Eo "$why" "$T_WORK/dyn.out") for the dynamic stillctl"

# ---- snapshots inside, of a store written from outside ----------------------------------------
store=$T_WORK/in/store
"$TORTURE" init "$store" >/dev/null
t_bg "$TORTURE" write --persist-interval 1000 "$store"
persisted() { [ -n "$(sqlite3 -cmd '.timeout 5000' "file:$store/chroma.sqlite3?mode=ro" 'select seq from max_seq_id limit 1' 2>/dev/null)" ]; }
t_wait_for 30 persisted
# Each snapshot after the first waits until the writer has committed past the one before, so
# the three are three different states of the live store.
counter() { sqlite3 -cmd '.timeout 5000' "file:$1/chroma.sqlite3?mode=ro" 'select n from counter'; }
advanced() { [ "$(counter "$store")" -gt "$last" ]; }
prev=() last=-1
for i in 1 2 3; do
  t_wait_for 30 advanced
  in_root "$ctl" snapshot -q "${prev[@]}" /mnt/store "/mnt/snap$i" || t_fail "snapshot $i inside $suite failed"
  in_root "$ctl" verify "/mnt/snap$i" >"$T_WORK/verify.out" ||
    { cat "$T_WORK/verify.out" >&2; t_fail "snapshot $i does not verify inside $suite"; }
  "$TORTURE" check --strict "$T_WORK/in/snap$i" >"$T_WORK/check.out" 2>&1 ||
    { cat "$T_WORK/check.out" >&2; t_fail "snapshot $i is not consistent"; }
  prev=(--previous "/mnt/snap$i")
  last=$(counter "$T_WORK/in/snap$i")
done
kill -TERM "${T_PIDS[-1]}"; wait "${T_PIDS[-1]}" || t_fail "torture writer failed"
T_PIDS=()
t_log "3 snapshots by the layer's stillctl in $suite under the writer (last at commit $last): verified inside, consistent"
