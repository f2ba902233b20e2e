"""What pyproject.toml cannot declare stably: the optional C kernels, the sparse decoder's and
random cut forest's scorer. Without a C compiler the build skips them and
``pipealgos.io.sparse_run`` and ``random_cut_forest.forest`` use their numpy implementations
(same results, slower)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("pipealgos.io._sparse_kernel", ["pipealgos/io/_sparse_kernel.c"], optional=True),
        Extension("pipealgos.algorithms.random_cut_forest._score_kernel",
                  ["pipealgos/algorithms/random_cut_forest/_score_kernel.c"], libraries=["m"], optional=True),
    ]
)
