#!/usr/bin/env bash
# Install everything stillfs needs to build and test on Debian 12, then configure the build.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
pkgs=(build-essential clang meson ninja-build pkg-config
      libfuse3-dev fuse3 libsqlite3-dev sqlite3 libcriterion-dev
      rsync attr acl psmisc procps util-linux bc python3
      valgrind libclang-rt-14-dev strace time
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
