"""Serving settings from the environment, as SageMaker and its inference toolkit name them.

``SAGEMAKER_BIND_TO_PORT`` (default 8080), ``SAGEMAKER_MODEL_SERVER_WORKERS`` (default: the
CPU count), ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (seconds, default 60), and pipealgos' own
``PIPEALGOS_MODEL_MAX_EXTRACTED_MB`` (default 4096: the most a ``model.tar.gz`` may extract
to) and ``PIPEALGOS_REQUEST_READ_TIMEOUT`` (seconds, default 20: the most a request's body may
take to arrive, and the longest a client may leave its connection silent mid-request). A
value that is not a number is an error naming the variable, not a silent default.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pipealgos.io import DataError
from pipealgos.io.mxnet_module import max_inflated_bytes

DEFAULT_PORT = 8080
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
DEFAULT_TIMEOUT_S = 60
DEFAULT_READ_TIMEOUT_S = 20  # SageMaker's front end sends a 6 MB body in well under a second


class ServeConfigError(ValueError):
    """A serving environment variable holds an unusable value."""


def env_number(name: str, default, kind: Callable = int, minimum: float | None = None):
    """``kind(os.environ[name])`` or ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ServeConfigError(f"{name}='{raw}' is not a valid {kind.__name__}") from None
    if minimum is not None and value < minimum:
        raise ServeConfigError(f"{name}={raw} must be at least {minimum}")
    return value


def default_host() -> str:
    """Every interface (``0.0.0.0``) when serving as a SageMaker container, else loopback only,
    so a model served on a laptop is not exposed to the network.

    "As a container" means this process is PID 1 (the image's exec-form ``ENTRYPOINT
    ["pipealgos"]`` makes ``docker run IMAGE serve`` PID 1, as SageMaker and SDK local mode run
    it) or ``SAGEMAKER_BIND_TO_PORT`` is set (SageMaker's multi-container endpoints). Chosen over
    looking for ``/.dockerenv``: development containers have one too, and a shell in them is
    no endpoint.
    """
    if os.getpid() == 1 or os.environ.get("SAGEMAKER_BIND_TO_PORT", "").strip():
        return ALL_INTERFACES
    return LOOPBACK


def default_port() -> int:
    return env_number("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, int, minimum=1)


def default_workers() -> int:
    return env_number("SAGEMAKER_MODEL_SERVER_WORKERS", os.cpu_count() or 1, int, minimum=1)


def default_timeout() -> int:
    return env_number("SAGEMAKER_MODEL_SERVER_TIMEOUT", DEFAULT_TIMEOUT_S, int, minimum=1)


def max_extracted_model_bytes() -> int:
    """``PIPEALGOS_MODEL_MAX_EXTRACTED_MB`` in bytes, read where every model reader reads it."""
    try:
        return max_inflated_bytes()
    except DataError as exc:
        raise ServeConfigError(str(exc)) from None


def request_read_timeout() -> float:
    return env_number("PIPEALGOS_REQUEST_READ_TIMEOUT", DEFAULT_READ_TIMEOUT_S, float, minimum=0.1)
