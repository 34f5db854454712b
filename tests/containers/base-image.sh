#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# base-image.sh SUITE [PACKAGE...]: print the name of a local podman image holding a minimal
# Debian SUITE (bookworm, bullseye, ...) with PACKAGEs installed, building it first if podman
# does not have it yet. No image registry is needed: the root filesystem is made from Debian's
# packages with mmdebstrap and imported with `podman import`. The image's tag is a digest of
# the suite and the package list, so a changed list builds a new image and an unchanged one
# costs nothing. Installs podman, runc and mmdebstrap when they are missing (root only).
#
# Callers export CONTAINERS_CONF=tests/containers/containers.conf before any podman command.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
suite=${1:?usage: base-image.sh SUITE [PACKAGE...]}
shift
pkgs=$(printf '%s\n' "$@" | sort -u | paste -sd, -)

need=()
for cmd_pkg in podman:podman runc:runc mmdebstrap:mmdebstrap newuidmap:uidmap; do
  command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need+=("${cmd_pkg#*:}")
done
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then echo "base-image: need root to install ${need[*]}" >&2; exit 1; fi
  echo "base-image: installing ${need[*]} (Debian)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The image's configuration is part of the tag too (an image without PATH is another image).
config="ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
tag=$(printf '%s %s %s\n' "$suite" "$pkgs" "$config" | sha256sum | cut -c1-12)
image=localhost/stillfs-base-$suite:$tag
if ! podman image exists "$image"; then
  echo "base-image: building $image (Debian $suite${pkgs:+ + $pkgs}) with mmdebstrap" >&2
  include=()
  [ -n "$pkgs" ] && include=(--include="$pkgs")
  # The rootfs goes to a file first: a pipe would hide mmdebstrap's exit status from set -e.
  tarball=$(mktemp --suffix=.tar)
  trap 'rm -f "$tarball"' EXIT
  # A fetch from the Debian mirror can fail now and then: try three times before giving up.
  for try in 1 2 3; do
    mmdebstrap --variant=minbase --quiet "${include[@]}" "$suite" "$tarball" && break
    ((try < 3)) || { echo "base-image: mmdebstrap failed 3 times for $image" >&2; exit 1; }
    echo "base-image: mmdebstrap failed (attempt $try of 3); trying again" >&2
  done
  # An imported root filesystem has no configuration at all: without PATH, a container whose
  # command is a bare name ("sh") fails to start under podman kube play.
  podman import -q --change "$config" "$tarball" "$image" >/dev/null
fi
echo "$image"
