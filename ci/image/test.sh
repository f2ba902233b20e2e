#!/usr/bin/env bash
# `make test-image`: installs podman if needed, makes the base image if absent, builds the CPU
# image, runs tests/image against it, and removes what it started (the image by id; the tests
# remove their own containers and podman service by id/PID). Run as root (CI is).
# PIPEALGOS_IMAGE=NAME: test an existing image instead of building one (it is kept).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO_ROOT"

"$CI_IMAGE_DIR/setup.sh"
"$CI_IMAGE_DIR/base.sh"

built=""
cleanup() {
    if [ -n "$built" ]; then
        log "removing image $built"
        podman rmi -f "$built" >/dev/null || true
    fi
}
trap cleanup EXIT

if [ -z "${PIPEALGOS_IMAGE:-}" ]; then
    tag="localhost/pipealgos:test-$$"
    built="$("$CI_IMAGE_DIR/build.sh" "$tag")"
    export PIPEALGOS_IMAGE="$tag"
fi
log "testing $PIPEALGOS_IMAGE"
"$VPY" -m pytest -q -p no:cacheprovider tests/image
