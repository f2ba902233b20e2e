"""Running a test under each implementation of the sparse fast path (``sparse_run``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pipealgos.io import sparse_run

KERNEL_BUILT = sparse_run._sparse_kernel is not None

# Parameter values for a test's `implementation` argument. A missing kernel shows as a skip
# (pytest -ra lists it): the install found no C compiler.
SPARSE_IMPLEMENTATIONS = [
    "numpy",
    pytest.param("c", marks=pytest.mark.skipif(not KERNEL_BUILT, reason="pipealgos.io._sparse_kernel not built")),
]


@contextmanager
def sparse_implementation(name: str) -> Iterator[None]:
    """Decode sparse runs with ``name`` ("numpy" or "c") inside the block."""
    before = sparse_run.implementation
    sparse_run.implementation = name
    try:
        yield
    finally:
        sparse_run.implementation = before
