#!/usr/bin/env bash
# The base image of every stand-in: Debian 12 (bookworm), minbase variant, made here with
# debootstrap from the machine's own Debian mirror and imported into Docker. No image is
# pulled. Idempotent: when the tag exists, nothing is done (remove the tag to rebuild).
#
#   deploy/standins/make-base.sh [TAG]      default: flight-delays-standin/debian:bookworm
#
# Needs root, docker and debootstrap (apt-get install debootstrap). The mirror is the
# first Debian one in the apt sources (DEBIAN_MIRROR overrides it).
set -euo pipefail

TAG=${1:-${STANDIN_BASE_IMAGE:-flight-delays-standin/debian:bookworm}}
PROG=make-base

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$PROG: $TAG exists, nothing to do"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "$PROG: debootstrap is missing: apt-get install debootstrap" >&2
    exit 1
}
if [[ $(id -u) != 0 ]]; then
    echo "$PROG: debootstrap needs root" >&2
    exit 1
fi

mirror_from_sources() {
    # One-line sources (deb URL suite ...) and deb822 (URIs: URL) alike.
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r $file ]] || continue
        sed -nE -e 's#^deb\s+(\[[^]]*\]\s+)?(\S+)\s+bookworm(\s.*)?$#\2#p' \
            -e 's#^URIs:\s+(\S+)\s*$#\1#p' "$file"
    done | grep -v -- '-security' | head -n 1
}
MIRROR=${DEBIAN_MIRROR:-$(mirror_from_sources)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

ROOTFS=$(mktemp -d /tmp/standin-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "$PROG: debootstrap --variant=minbase bookworm from $MIRROR"
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -n 20 "$ROOTFS.log" >&2
    echo "$PROG: debootstrap failed (log above)" >&2
    exit 1
}
rm -f "$ROOTFS.log"
# The image's apt lists are fetched again by each stand-in; keep the layer small.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$TAG" >/dev/null
echo "$PROG: imported $TAG"
