# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
# Helpers for the end-to-end tests against a real S3 server and the real AWS CLI (sourced after
# lib.sh). The peers are installed by scripts/install-test-peers.sh: s3rver from the npm
# registry (pinned by tests/s3/package-lock.json) and Debian's awscli. The server runs on
# 127.0.0.1 on a port the kernel picks and is killed by lib.sh's cleanup; the CLI is configured
# through the environment only, never through ~/.aws.

S3_PEERS=${STILLFS_PEERS_DIR:-/opt/stillfs-test-peers}
# Debian's CLI on purpose: a pip-installed `aws` earlier in PATH is not what a fresh machine has.
AWS=${STILLFS_AWS:-/usr/bin/aws}
S3_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../s3" && pwd)

# s3_require_peers [COMMAND:DEBIAN-PACKAGE...]: skip (exit 77) when a peer, or one of the
# given commands, is missing, or fail under CI, where setup.sh must have installed them.
s3_require_peers() {
  local miss=() c
  for c in "$@"; do command -v "${c%%:*}" >/dev/null 2>&1 || miss+=("${c%%:*} (Debian package ${c#*:})"); done
  [ -x "$AWS" ] || miss+=("$AWS (Debian package awscli)")
  command -v node >/dev/null 2>&1 || miss+=("node")
  command -v curl >/dev/null 2>&1 || miss+=("curl")
  command -v sqlite3 >/dev/null 2>&1 || miss+=("sqlite3")
  [ -f "$S3_PEERS/node_modules/s3rver/package.json" ] || miss+=("s3rver in $S3_PEERS")
  ((${#miss[@]} == 0)) && return 0
  local msg="missing test peers: ${miss[*]}; run scripts/install-test-peers.sh as root"
  [ -n "${CI:-}" ] || [ -n "${STILLFS_REQUIRE_PEERS:-}" ] && t_fail "$msg"
  echo "SKIP: $msg" >&2
  exit 77
}

s3_versions() {
  local aws
  # Debian's CLI: its package's version, without starting the CLI (a second of CPU for Python
  # to load it); any other CLI is asked.
  if [ "$AWS" = /usr/bin/aws ] && aws=$(dpkg-query -W -f='${Version}' awscli 2>/dev/null) && [ -n "$aws" ]; then
    aws=${aws#*:} aws=aws-cli/${aws%%-*}
  else
    aws=$("$AWS" --version 2>&1 | cut -d' ' -f1)
  fi
  echo "$aws, s3rver $(node -p "require('$S3_PEERS/node_modules/s3rver/package.json').version"), node $(node --version)"
}

# s3_start [S3_CONFIG_LINE...] -- BUCKET...: start the server with the buckets, write the CLI's
# config (path-style addressing plus the given "key = value" lines of its s3 section) and export
# what `s3_aws` needs. Sets S3_ENDPOINT and S3_PID.
s3_start() {
  local extra=() d=$T_WORK/s3
  while (($#)) && [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  mkdir -p "$d/data" "$d/home"
  t_bg node "$S3_DIR/server.js" "$d/data" "$d/port" "$@" >"$d/server.log" 2>&1
  S3_PID=${T_PIDS[-1]}
  local deadline=$((SECONDS + 30))
  until [ -s "$d/port" ]; do
    if ! kill -0 "$S3_PID" 2>/dev/null; then cat "$d/server.log" >&2; t_fail "s3rver exited at start"; fi
    ((SECONDS < deadline)) || t_fail "timed out waiting for s3rver to listen"
    sleep 0.05
  done
  S3_ENDPOINT=http://127.0.0.1:$(cat "$d/port")
  {
    echo "[default]"
    echo "region = us-east-1"
    echo "s3 ="
    echo "  addressing_style = path"
    local l; for l in "${extra[@]}"; do echo "  $l"; done
  } >"$d/aws-config"
  : >"$d/aws-credentials"
  export AWS_CONFIG_FILE=$d/aws-config AWS_SHARED_CREDENTIALS_FILE=$d/aws-credentials
  # s3rver's built-in credentials; it checks the signatures.
  export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true AWS_PAGER="" AWS_CLI_AUTO_PROMPT=off
  export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
  unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_CA_BUNDLE
  S3_HOME=$d/home
}

# s3_aws ARGS...: the CLI against our server, with a private HOME so ~/.aws is never read or written.
s3_aws() { HOME=$S3_HOME "$AWS" --endpoint-url "$S3_ENDPOINT" "$@"; }

# s3_keys BUCKET PREFIX: the keys under PREFIX, one per line, straight from the server's
# ListObjectsV2 (anonymous; s3rver allows it), following continuation tokens.
s3_keys() {
  local bucket=$1 prefix=$2 token="" out
  while :; do
    out=$(curl -sS --fail -G "$S3_ENDPOINT/$bucket" --data-urlencode list-type=2 \
            --data-urlencode "prefix=$prefix" ${token:+--data-urlencode "continuation-token=$token"}) ||
      return 1
    grep -o '<Key>[^<]*</Key>' <<<"$out" | sed 's/<Key>\(.*\)<\/Key>/\1/' || true
    grep -q '<IsTruncated>true</IsTruncated>' <<<"$out" || break
    token=$(sed -n 's/.*<NextContinuationToken>\([^<]*\)<\/NextContinuationToken>.*/\1/p' <<<"$out")
    [ -n "$token" ] || return 1
  done
}

# s3_lastmod BUCKET PREFIX: "KEY-WITHOUT-PREFIX EPOCH-SECONDS" for the objects under PREFIX.
s3_lastmod() {
  local out k t
  out=$(curl -sS --fail -G "$S3_ENDPOINT/$1" --data-urlencode list-type=2 --data-urlencode "prefix=$2") || return 1
  grep -q '<IsTruncated>true</IsTruncated>' <<<"$out" && { echo "s3_lastmod: listing truncated" >&2; return 1; }
  grep -o '<Key>[^<]*</Key><LastModified>[^<]*</LastModified>' <<<"$out" |
    sed 's#<Key>\([^<]*\)</Key><LastModified>\([^<]*\)</LastModified>#\1 \2#' |
    while read -r k t; do echo "${k#"$2"} $(date -d "$t" +%s)"; done
}

# mf_files MANIFEST: "PATH SIZE DIGEST" for every file and database a manifest lists.
mf_files() { awk 'p && ($1 == "f" || $1 == "s") { print $9, $5, $7 } $0 == "." { p = 1 }' "$1" | sort; }
# mf_dbs MANIFEST: the paths of the databases it lists.
mf_dbs() { awk 'p && $1 == "s" { print $9 } $0 == "." { p = 1 }' "$1"; }
mf_id() { awk '$1 == "id" { print $2; exit }' "$1"; }
