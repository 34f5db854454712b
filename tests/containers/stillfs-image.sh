#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stillfs-image.sh [TARGET]: print the name of a local podman image built from
# packaging/container/Containerfile (TARGET: runtime, the default, or torture), building it
# first if podman does not have it yet. The base images come from base-image.sh (no registry).
# The tag is a digest of the Containerfile, of every source its COPY lines take from the
# repository, and of the base images, so a second run with unchanged sources builds nothing.
#
# Callers export CONTAINERS_CONF=tests/containers/containers.conf before any podman command.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
target=${1:-runtime}
case $target in runtime | torture) ;; *) echo "stillfs-image: unknown target '$target'" >&2; exit 2 ;; esac
cf=packaging/container/Containerfile

build_base=$("$here/base-image.sh" bookworm build-essential meson ninja-build pkg-config libfuse3-dev libsqlite3-dev libssl-dev)
base=$("$here/base-image.sh" bookworm libfuse3-3 libsqlite3-0 libssl3 fuse3)

cd "$repo"
# The sources: the arguments of every COPY that does not copy from a stage, but its last.
mapfile -t srcs < <(awk '$1 == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) print $i }' "$cf")
((${#srcs[@]})) || { echo "stillfs-image: no COPY lines in $cf" >&2; exit 1; }
tag=$( {
  echo "$target $build_base $base"
  sha256sum "$cf"
  find "${srcs[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-12)
image=localhost/stillfs-test-$target:$tag
if ! podman image exists "$image"; then
  echo "stillfs-image: building $image from $cf" >&2
  # --layers=false: only the final image is kept, not the builder's intermediate layers.
  podman build -q --layers=false -f "$cf" --target "$target" \
    --build-arg BUILD_BASE="$build_base" --build-arg BASE="$base" -t "$image" . >/dev/null
fi
echo "$image"
