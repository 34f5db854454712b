#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install everything stillfs needs to build and test on Debian 12, then configure the build.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
pkgs=(build-essential clang meson ninja-build pkg-config
      libfuse3-dev fuse3 libsqlite3-dev sqlite3 libcriterion-dev libssl-dev
      rsync attr acl libcap2-bin psmisc procps util-linux bc python3
      valgrind libclang-rt-14-dev strace time
      debhelper lintian     # the package test (tests/integration/pkg-deb.sh) builds and checks the .deb
      # real containers (tests/containers/, container-*.sh): podman with runc, catatonit for
      # pods (podman kube play), mmdebstrap and uidmap for base images without a registry
      podman runc catatonit mmdebstrap uidmap
      # reflink tests and the benchmark (XFS, btrfs on loop devices); libcrypto's SHA-256
      xfsprogs btrfs-progs openssl libssl-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then echo "setup: need root to install packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
peers="$(dirname "$0")/install-test-peers.sh"   # the S3 server and AWS CLI of the s3-* tests
if [ -f "$peers" ]; then bash "$peers"; fi
