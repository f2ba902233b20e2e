# pipealgos container image: every algorithm, answering SageMaker's `docker run IMAGE train|serve`.
#
# CPU (default):   ci/image/build.sh                     (prepares ci/image/wheels/, then builds)
#            or:   podman build --build-arg BASE_IMAGE=docker.io/library/debian:bookworm-slim -t pipealgos .
# GPU:             docker build --build-arg BASE_IMAGE=docker.io/nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#                       --build-arg TORCH_VARIANT=cu128 -t pipealgos:gpu .
# Per-algorithm:   --build-arg PIPEALGOS_ALGORITHM=kmeans  (a job's Environment may still override it)
#
# The base needs only apt and a Python >= 3.11 from its own packages (Debian 12, Ubuntu 24.04);
# a builder stage on the same base adds gcc and the Python headers to compile pipealgos' wheel.
# torch is pinned to the exact build `torch==TORCH_VERSION+TORCH_VARIANT` (cpu, or a CUDA tag
# such as cu128 that PyTorch publishes for that version), so a CPU image can never pick up a
# multi-GB CUDA wheel. Wheels in ci/image/wheels/ are used first; with WHEELS_ONLY=1 they are
# the only source (ci/image/build.sh fills them, and CI builds offline that way); otherwise
# torch comes from TORCH_INDEX_URL and the rest from PyPI.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# Builder: the pipealgos wheel, with its C kernels (the sparse decoder's and random cut forest's
# scorer) compiled by the base's own gcc against its own Python. Only the wheel leaves this
# stage, so the image itself carries no compiler. The kernels are optional extensions (a build
# without a compiler falls back to numpy), so the wheel is checked for them here: a failed
# compile fails the build.
FROM ${BASE_IMAGE} AS builder
ARG WHEELS_ONLY=
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev
COPY ci/image/wheels/ /tmp/wheels/
COPY pyproject.toml setup.py README.md /tmp/src/
COPY pipealgos /tmp/src/pipealgos
RUN python3 -m venv /tmp/build-env \
 && /tmp/build-env/bin/pip install -q --disable-pip-version-check ${WHEELS_ONLY:+--no-index} --only-binary=:all: \
        --find-links /tmp/wheels "setuptools>=68" \
 && /tmp/build-env/bin/pip wheel --disable-pip-version-check --no-deps --no-build-isolation -w /tmp/dist /tmp/src
RUN for kernel in pipealgos/io/_sparse_kernel pipealgos/algorithms/random_cut_forest/_score_kernel; do \
      /tmp/build-env/bin/python -m zipfile -l /tmp/dist/pipealgos-*.whl | grep -q "$kernel\..*\.so" \
      || { echo "the pipealgos wheel was built without $kernel (see the compiler output above)" >&2; exit 1; }; \
    done

FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG WHEELS_ONLY=

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="pipealgos" \
      org.opencontainers.image.description="Drop-in SageMaker protobuf-RecordIO built-in algorithms (train/serve)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/pipealgos/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Python from the base's own packages; no compilers: every dependency installs from a wheel.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

# Dependencies first (a layer that survives source edits): torch, then pyproject's list.
# torch's C++ headers, CMake files and C++ test binaries (~190 MB) only serve extension builds,
# and the image has no compiler: they go, keeping bin/torch_shm_manager (shared-memory tensors).
COPY ci/image/wheels/ /tmp/wheels/
COPY pyproject.toml /tmp/deps/pyproject.toml
RUN python3 -m venv /opt/pipealgos \
 && pip install ${WHEELS_ONLY:+--no-index} --only-binary=:all: --find-links /tmp/wheels \
        --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}+${TORCH_VARIANT}" \
 && torch_dir="$(python3 -c 'import importlib.util as u; print(u.find_spec("torch").submodule_search_locations[0])')" \
 && rm -rf "$torch_dir/include" "$torch_dir/share" "$torch_dir/test" \
 && find "$torch_dir/bin" -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/deps/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/deps/requirements.txt \
 && pip install ${WHEELS_ONLY:+--no-index} --only-binary=:all: --find-links /tmp/wheels -r /tmp/deps/requirements.txt \
 && rm -rf /tmp/wheels /tmp/deps /root/.cache

# pipealgos itself: the builder's wheel (no build tree, no compiler here).
COPY --from=builder /tmp/dist/ /tmp/dist/
RUN pip install --no-deps --no-index /tmp/dist/pipealgos-*.whl \
 && rm -rf /tmp/dist /root/.cache \
 && python3 -c "import pipealgos.cli; from pipealgos.io import sparse_run; assert sparse_run.implementation == 'c'"

# Last, so per-algorithm tags share every layer above.
ARG PIPEALGOS_ALGORITHM=
ENV PIPEALGOS_ALGORITHM=${PIPEALGOS_ALGORITHM}
WORKDIR /opt/ml
EXPOSE 8080
# SageMaker passes `train` or `serve` as the command; exec form keeps `pipealgos` PID 1, so it
# receives SIGTERM itself (StopTrainingJob, endpoint shutdown). `serve` honours
# SAGEMAKER_BIND_TO_PORT, which the label above allows.
ENTRYPOINT ["pipealgos"]
CMD ["--help"]
