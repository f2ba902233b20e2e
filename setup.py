"""The one thing pyproject.toml cannot declare stably: the optional C kernel of the sparse
decoder. Without a C compiler the build skips it and ``pipealgos.io.sparse_run`` uses its
numpy implementation (same results, slower)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("pipealgos.io._sparse_kernel", ["pipealgos/io/_sparse_kernel.c"], optional=True),
    ]
)
