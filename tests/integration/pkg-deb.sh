#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Debian package: built from this tree (a copy of it, so the checkout gets no build
# artefacts), lintian-clean of errors, and installed into a clean Debian 12 container with
# apt-get (which fetches fuse3 and the libraries from Debian); the container starts first, its
# `apt-get update` running while the package builds, and lintian runs while it installs. There
# both fstab types (fuse.stillfs through mount.fuse3, stillfs through mount.stillfs) mount with
# `mount`, a snapshot copied out of .snapshot verifies, `umount` stops the daemons, and
# `apt-get purge` leaves none of the package's files behind, nor the daemon's cache under
# /var/cache/stillfs.
source "$(dirname "$0")/lib.sh"
src=$(cd "$(dirname "$0")/../.." && pwd)
export CONTAINERS_CONF=$src/tests/containers/containers.conf
name=stillfs-test-deb-$$
trap 'rc=$?; podman rm -f "$name" >/dev/null 2>&1 || true; set +e; (exit $rc); t_cleanup' EXIT
for tool in dpkg-buildpackage dh lintian; do
  command -v "$tool" >/dev/null || t_fail "$tool is missing (scripts/setup.sh installs it)"
done
if ! command -v podman >/dev/null && [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: podman is not installed, and installing it needs root"
  exit 77
fi
image=$(bash "$src/tests/containers/base-image.sh" bookworm)
if ! err=$(podman run --rm --name "$name" --device /dev/fuse --cap-add SYS_ADMIN "$image" true 2>&1); then
  echo "SKIP: podman cannot run a container here: $(tail -n1 <<<"$err")"
  exit 77
fi

# ---- the container, started now: its `apt-get update` runs while the package builds --------
# The script waits for the package in /pkg (put there once it is built, /pkg/ready after it),
# then installs it, mounts from fstab, snapshots, unmounts and purges.
mkdir "$T_WORK/pkg"
cat >"$T_WORK/container.sh" <<'EOF'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
step() { echo "== $*"; }
step update
apt-get update -qq
step wait for the package
for _ in $(seq 3000); do [ ! -e /pkg/ready ] || break; sleep 0.1; done
[ -e /pkg/ready ] || { echo "no package in /pkg after 300 s"; exit 1; }
step install
apt-get install -y -qq --no-install-recommends /pkg/stillfs_*.deb >/dev/null
for f in /usr/bin/stillfs /usr/bin/stillctl /sbin/mount.stillfs /usr/lib/systemd/system/stillfs@.service \
         /usr/share/man/man1/stillfs.1.gz /usr/share/man/man1/stillctl.1.gz /usr/share/man/man8/mount.stillfs.8.gz \
         /usr/share/bash-completion/completions/stillctl; do
  dpkg -S "$f" >/dev/null || { echo "not installed by the package: $f"; exit 1; }
done
grep -qx 'ExecStart=/usr/bin/stillfs -f -o auto_unmount $OPTIONS ${STORE} ${MOUNTPOINT}' \
  /usr/lib/systemd/system/stillfs@.service || { echo "the unit does not run /usr/bin/stillfs"; exit 1; }
files=$(dpkg -L stillfs | while read -r f; do [ -d "$f" ] || echo "$f"; done)

step mount from /etc/fstab
# Two stores: each daemon's default cache is /var/cache/stillfs/ESCAPED-STORE, one daemon each.
mkdir -p /srv/a/sub /srv/b /mnt/a /mnt/b
echo one >/srv/a/a.txt
head -c 300000 /dev/urandom >/srv/a/sub/b.bin
echo two >/srv/b/b.txt
cat >>/etc/fstab <<'FSTAB'
/srv/a  /mnt/a  fuse.stillfs  defaults,nofail,allow_other,snapshot_linger=1  0  0
/srv/b  /mnt/b  stillfs       defaults,noauto  0  0
FSTAB
mount /mnt/a
mount /mnt/b
for m in /mnt/a /mnt/b; do
  t=$(findmnt -n -o FSTYPE --mountpoint "$m") || { echo "$m is not mounted"; exit 1; }
  [ "$t" = fuse.stillfs ] || { echo "$m is $t, not fuse.stillfs"; exit 1; }
  stillctl status "$m" >/dev/null
done

step snapshot through .snapshot
cp -a /mnt/a/.snapshot /tmp/copy
cmp /tmp/copy/sub/b.bin /srv/a/sub/b.bin
stillctl verify /tmp/copy
stillctl verify /mnt/b/.snapshot
cmp /mnt/b/.snapshot/b.txt /srv/b/b.txt
[ -d /var/cache/stillfs ] || { echo "the daemon made no cache under /var/cache/stillfs"; exit 1; }

step unmount
umount /mnt/a /mnt/b
daemons() { for e in /proc/[0-9]*/exe; do [ "$(readlink "$e" 2>/dev/null)" != /usr/bin/stillfs ] || return 0; done; return 1; }
for _ in $(seq 200); do daemons || break; sleep 0.1; done
if daemons; then echo "stillfs still runs after umount"; exit 1; fi

step purge
apt-get purge -y -qq stillfs >/dev/null
if dpkg -L stillfs >/dev/null 2>&1; then echo "dpkg still lists stillfs's files"; exit 1; fi
left=$(for f in $files; do [ ! -e "$f" ] || echo "$f"; done)
[ -z "$left" ] || { echo "left behind by purge: $left"; exit 1; }
[ ! -e /var/cache/stillfs ] || { echo "left behind by purge: /var/cache/stillfs"; exit 1; }
step done
EOF
t_bg podman run --rm --name "$name" --device /dev/fuse --cap-add SYS_ADMIN -v "$T_WORK/pkg:/pkg:ro" \
  -v "$T_WORK/container.sh:/container.sh:ro" "$image" bash /container.sh >"$T_WORK/container.log" 2>&1
container=${T_PIDS[-1]}

# ---- build, in a copy of the tracked (and new, not ignored) files --------------------------
start=$SECONDS
mkdir "$T_WORK/src"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$src" ls-files -z --cached --others --exclude-standard |
    tar -C "$src" --null -T - -cf - | tar -C "$T_WORK/src" -xf -
else
  tar -C "$src" --exclude='./build*' -cf - . | tar -C "$T_WORK/src" -xf -
fi
(cd "$T_WORK/src" && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b) >"$T_WORK/build.log" 2>&1 ||
  { tail -n 30 "$T_WORK/build.log" >&2; t_fail "dpkg-buildpackage failed"; }
debs=("$T_WORK"/stillfs_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || t_fail "expected one stillfs_*.deb, got: ${debs[*]}"
t_log "built $(basename "${debs[0]}") in $((SECONDS - start)) s"
# ---- hand the package to the container, and lint it meanwhile --------------------------------
start=$SECONDS
cp "${debs[0]}" "$T_WORK/pkg/"
touch "$T_WORK/pkg/ready"
rc=0
lintian "$T_WORK"/stillfs_*.changes >"$T_WORK/lintian.out" 2>&1 || rc=$?
grep -v 'running with root privileges' "$T_WORK/lintian.out" | sed 's/^/# lintian: /' >&2 || true
[ "$rc" -eq 0 ] || t_fail "lintian reports errors (exit $rc)"
t_log "lintian: no errors ($((SECONDS - start)) s)"
rc=0
wait "$container" || rc=$?
unset 'T_PIDS[-1]'
[ "$rc" -eq 0 ] ||
  { cat "$T_WORK/container.log" >&2; t_fail "the package failed in the Debian 12 container"; }
grep -q '^== done$' "$T_WORK/container.log" || { cat "$T_WORK/container.log" >&2; t_fail "the container script stopped early"; }
t_log "installed, mounted from fstab (fuse.stillfs and stillfs), snapshot verified, unmounted, purged clean ($((SECONDS - start)) s after the package was ready)"
