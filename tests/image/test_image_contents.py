"""What went into the image: the compiled kernels are there and used; no compiler is; every algorithm is."""

from __future__ import annotations

from image_helpers import image_python

# Decodes sparse records inside the image and says which implementation took them.
SPARSE_DECODE = """
import io
import numpy as np, scipy.sparse as sp
from pipealgos.io import sparse_run, write_sparse
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.stream import decode_buffer
x = sp.random(2000, 100000, density=5e-4, format="csr", dtype=np.float32, random_state=0)
out = io.BytesIO()
write_sparse(out, x)
decoder = RecordDecoder("image")
rows = sum(block.size for block in decode_buffer(out.getvalue(), decoder))
print(sparse_run.implementation, rows, decoder.fast_sparse_records)
"""


def test_sparse_runs_are_decoded_by_the_compiled_kernel(image):
    implementation, rows, fast = image_python(image, SPARSE_DECODE).split()
    assert implementation == "c", "the image's pipealgos has no compiled _sparse_kernel: numpy fallback"
    assert int(rows) == 2000 and int(fast) >= 1990


def test_random_cut_forest_scores_with_the_compiled_kernel(image):
    code = "from pipealgos.algorithms.random_cut_forest import forest; print(forest.implementation)"
    assert image_python(image, code) == "c", "the image's pipealgos has no compiled RCF _score_kernel"


def test_image_has_no_compiler(image):
    found = image_python(image, "import shutil; print(*filter(None, map(shutil.which, ['gcc', 'cc', 'c++', 'clang'])))")
    assert found == ""


def test_image_registers_every_algorithm(image_algorithms, image_has_serve):
    from pipealgos.platform.registry import ALGORITHMS

    assert image_algorithms == set(ALGORITHMS), "the image was built from another tree, or lost an algorithm"
    assert image_has_serve
