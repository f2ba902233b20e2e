#!/usr/bin/env bash
# Makes $BASE_IMAGE (default localhost/bookworm-minbase) from Debian's own packages when it is
# not there yet: no Docker Hub needed. Reused on later runs; 1 to 2.5 min on a fresh machine.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE present, reused"
    exit 0
fi
case "$BASE_IMAGE" in
    localhost/bookworm-minbase*) ;;
    *) log "$BASE_IMAGE is missing: pull it (podman pull $BASE_IMAGE) or leave BASE_IMAGE unset"; exit 1 ;;
esac
rootfs="$(mktemp -d /tmp/pipealgos-rootfs.XXXXXX)"
# debootstrap mounts proc and sys inside; if it died with them mounted, unmount first, and never
# let rm cross into a mount.
cleanup() {
    umount -q "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
    rm -rf --one-file-system "$rootfs" "$rootfs.log"
}
trap cleanup EXIT
log "debootstrap --variant=minbase bookworm into $rootfs"
debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log"; exit 1; }
# The image build runs apt-get update itself; the bootstrap's package cache is dead weight.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
log "imported $BASE_IMAGE"
