"""Running a test under each implementation of the fast paths: the compiled kernel (``"c"``: the
sparse runs, the dense template's ``dense_gather``, the chunk cutter) or numpy (``sparse_run``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipealgos.io import sparse_run

# Parameter values for a test's `implementation` argument. `make test` builds the kernel
# (setup.py, with the machine's C compiler): a missing kernel fails the "c" cases rather than
# skipping them, and test_sparse_run.py's test_the_compiled_kernel_is_built says why.
SPARSE_IMPLEMENTATIONS = ["numpy", "c"]


@contextmanager
def sparse_implementation(name: str) -> Iterator[None]:
    """Decode sparse runs and dense template runs with ``name`` ("numpy" or "c") inside the block."""
    before = sparse_run.implementation
    sparse_run.implementation = name
    try:
        yield
    finally:
        sparse_run.implementation = before
