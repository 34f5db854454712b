#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install the real peers of the end-to-end tests (tests/integration/s3-*.sh, uploaders.sh):
#   - the AWS CLI from Debian's package registry (package awscli, /usr/bin/aws), curl, restic,
#     rclone and borg (packages restic, rclone, borgbackup), and
#   - the S3-compatible server s3rver from the npm registry, at the version pinned by
#     tests/s3/package.json + package-lock.json, into $STILLFS_PEERS_DIR
#     (default /opt/stillfs-test-peers), outside the work tree.
# Idempotent: nothing is fetched when what is installed already matches. Called by setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${STILLFS_PEERS_DIR:-/opt/stillfs-test-peers}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then echo "install-test-peers: need root to $1" >&2; exit 1; fi
}

# Debian packages: the AWS CLI, curl (the tests read the server's listing with it), the backup
# tools of tests/integration/uploaders.sh and, only where the machine has no Node.js, Debian's own.
pkgs=(awscli curl restic rclone borgbackup)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  need_root "install ${missing[*]}"
  echo "install-test-peers: installing ${missing[*]} (Debian)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# s3rver from the lockfile; `npm ci` installs exactly what the lockfile records.
if [ -f "$peers/node_modules/s3rver/package.json" ] &&
   cmp -s tests/s3/package-lock.json "$peers/package-lock.json" &&
   cmp -s tests/s3/package.json "$peers/package.json"; then
  :
else
  [ -w "$(dirname "$peers")" ] || [ -w "$peers" ] || need_root "write $peers"
  echo "install-test-peers: installing s3rver (npm) into $peers" >&2
  mkdir -p "$peers"
  cp tests/s3/package.json tests/s3/package-lock.json "$peers/"
  (cd "$peers" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
fi

echo "install-test-peers: $(/usr/bin/aws --version 2>&1 | cut -d' ' -f1), node $(node --version)," \
     "s3rver $(node -p "require('$peers/node_modules/s3rver/package.json').version") in $peers" >&2
