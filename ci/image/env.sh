# Sourced by the ci/image scripts: podman settings and the names they share.
CI_IMAGE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CI_IMAGE_DIR/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$CI_IMAGE_DIR/containers.conf}"
BASE_IMAGE="${BASE_IMAGE:-localhost/bookworm-minbase}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VPY="${VPY:-$REPO_ROOT/.venv/bin/python}"
log() { printf '[ci/image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
