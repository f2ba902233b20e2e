#!/usr/bin/env bash
# Builds the CPU image: ci/image/build.sh [TAG]  (default tag localhost/pipealgos:ci).
#
# Fills ci/image/wheels/ with every runtime wheel first (torch==$TORCH_VERSION+cpu and the
# `dependencies` of pyproject.toml, for this machine's Python; setuptools, with which the
# Dockerfile's builder stage compiles pipealgos' own wheel), then builds with
# WHEELS_ONLY=1: the build needs no index, and can never fetch a CUDA torch. The host pip's
# own settings apply (elsewhere: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu), and
# the wheels are for its Python: .venv's 3.11 matches the default base, Debian 12.
# Env: BASE_IMAGE, PIPEALGOS_ALGORITHM (per-algorithm tag), BUILD_ARGS (extra podman args).
# Prints the image id on stdout and records its size in $IMAGE_SIZE_FILE when set.
set -euo pipefail
source "$(dirname "$0")/env.sh"
tag="${1:-localhost/pipealgos:ci}"
wheels="$CI_IMAGE_DIR/wheels"

log "wheelhouse: torch==$TORCH_VERSION+cpu and pyproject.toml dependencies"
mapfile -t deps < <("$VPY" -c "import tomllib; print('\n'.join(tomllib.load(open('$REPO_ROOT/pyproject.toml', 'rb'))['project']['dependencies']))")
find "$wheels" -name '*.whl' -delete
"$VPY" -m pip download -q --only-binary=:all: -d "$wheels" \
    "torch==$TORCH_VERSION+cpu" "setuptools>=68" "${deps[@]}" 2> >(grep -v "is ignored: it is neither" >&2)

log "podman build -t $tag (base $BASE_IMAGE, algorithm '${PIPEALGOS_ALGORITHM:-}')"
start=$(date +%s)
# shellcheck disable=SC2086
podman build --quiet --layers=false -f "$REPO_ROOT/Dockerfile" -t "$tag" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_VERSION="$TORCH_VERSION" \
    --build-arg WHEELS_ONLY=1 --build-arg PIPEALGOS_ALGORITHM="${PIPEALGOS_ALGORITHM:-}" \
    ${BUILD_ARGS:-} "$REPO_ROOT" >&2
id="$(podman image inspect --format '{{.Id}}' "$tag")"
size="$(podman image inspect --format '{{.Size}}' "$tag")"
log "built $tag ($id) in $(( $(date +%s) - start )) s, size $(( size / 1000000 )) MB"
[ -n "${IMAGE_SIZE_FILE:-}" ] && echo "$size" > "$IMAGE_SIZE_FILE"
echo "$id"
