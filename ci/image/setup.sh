#!/usr/bin/env bash
# Installs podman and friends from Debian 12's packages (CI machines start without them).
# docker-compose is what the SageMaker SDK's local mode calls; debootstrap makes the base image.
set -euo pipefail
source "$(dirname "$0")/env.sh"
need=()
for tool in podman buildah runc debootstrap docker-compose; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing podman buildah runc debootstrap docker-compose (missing: ${need[*]})"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah runc debootstrap docker-compose
fi
podman --version
