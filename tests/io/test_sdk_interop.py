"""Against the real SageMaker Python SDK v2: same bytes written, each side reads the other's files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp
from sagemaker.amazon import common

from pipealgos.io.minibatch import concat
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.stream import decode_stream
from pipealgos.io.writer import write_dense, write_sparse

RNG = np.random.default_rng(7)
DENSE_INPUTS = {
    "float32": RNG.standard_normal((40, 7)).astype(np.float32),
    "float64": RNG.standard_normal((40, 7)),
    "int": RNG.integers(-50, 50, (40, 7)),  # numpy's default int: the SDK writes Int32Tensor
}
LABELS = {
    "none": None,
    "float32": RNG.integers(0, 3, 40).astype(np.float32),
    "float64": RNG.standard_normal(40),
    "int": RNG.integers(0, 300, 40),
}


def _sparse(dtype) -> sp.csr_matrix:
    matrix = sp.random(40, 1000, density=0.02, format="csr", random_state=3, dtype=np.float64)
    keep = np.ones(40)
    keep[5] = 0  # an all-zero row: shape only, no keys or values
    matrix = sp.csr_matrix(sp.diags(keep) @ matrix)
    matrix.eliminate_zeros()
    return matrix.astype(dtype)


def written(writer, array, labels) -> bytes:
    """What ``writer`` (the SDK's or ours: same signature) writes for ``array`` and ``labels``."""
    out = io.BytesIO()
    writer(out, array, labels)
    return out.getvalue()


def decode(data: bytes):
    return concat(list(decode_stream(io.BytesIO(data), RecordDecoder("sdk"))))


@pytest.mark.parametrize("label_kind", sorted(LABELS))
@pytest.mark.parametrize("kind", sorted(DENSE_INPUTS))
def test_dense_bytes_equal_the_sdk(kind, label_kind):
    array, labels = DENSE_INPUTS[kind], LABELS[label_kind]
    theirs = written(common.write_numpy_to_dense_tensor, array, labels)
    assert written(write_dense, array, labels) == theirs


@pytest.mark.parametrize("label_kind", sorted(LABELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_bytes_equal_the_sdk(dtype, label_kind):
    matrix, labels = _sparse(dtype), LABELS[label_kind]
    theirs = written(common.write_spmatrix_to_sparse_tensor, matrix, labels)
    assert written(write_sparse, matrix, labels) == theirs


@pytest.mark.parametrize("label_kind", sorted(LABELS))
@pytest.mark.parametrize("kind", sorted(DENSE_INPUTS))
def test_we_read_what_the_sdk_wrote_dense(kind, label_kind):
    array, labels = DENSE_INPUTS[kind], LABELS[label_kind]
    batch = decode(written(common.write_numpy_to_dense_tensor, array, labels))
    assert batch.features.dtype == np.float32
    assert np.array_equal(batch.features, array.astype(np.float32))
    if labels is None:
        assert batch.labels is None
    else:
        assert np.array_equal(batch.labels, labels.astype(np.float32))


@pytest.mark.parametrize("label_kind", ["none", "float32", "int"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_we_read_what_the_sdk_wrote_sparse(dtype, label_kind):
    matrix, labels = _sparse(dtype), LABELS[label_kind]
    batch = decode(written(common.write_spmatrix_to_sparse_tensor, matrix, labels))
    assert batch.is_sparse and batch.features.shape == matrix.shape
    assert np.array_equal(batch.features.toarray(), matrix.astype(np.float32).toarray())
    if labels is not None:
        assert np.array_equal(batch.labels, labels.astype(np.float32))


@pytest.mark.parametrize("sparse", [False, True])
def test_the_sdk_reads_what_we_wrote(sparse):
    labels = LABELS["float32"]
    out = io.BytesIO()
    if sparse:
        matrix = _sparse(np.float32)
        write_sparse(out, matrix, labels)
        expected = matrix.toarray()
    else:
        expected = DENSE_INPUTS["float32"]
        write_dense(out, expected, labels)
    out.seek(0)
    records = common.read_records(out)
    assert len(records) == len(expected)
    for row, label, record in zip(expected, labels, records):
        tensor = record.features["values"].float32_tensor
        got = np.zeros(len(row), dtype=np.float32)
        if sparse:
            assert list(tensor.shape) == [len(row)]
            got[np.asarray(tensor.keys, dtype=np.int64)] = tensor.values
        else:
            got[:] = tensor.values
        assert np.array_equal(got, row)
        assert list(record.label["values"].float32_tensor.values) == [label]
    out.seek(0)
    assert sum(1 for _ in common.read_recordio(out)) == len(expected)


def test_spec_worked_examples():
    """platform-contract.md 3.5: the hex our writer (and the SDK) produce for two tiny records."""
    dense = written(write_dense, np.array([[1.5, 2.0, -3.25]], dtype=np.float32), np.array([1.0], dtype=np.float32))
    assert dense.hex() == (
        "0a23d7ce300000000a1a0a0676616c7565731210120e0a0c0000c03f00000040000050c0"
        "12120a0676616c756573120812060a040000803f"
    )
    row = sp.csr_matrix(np.array([[0, 0, 7, 0, 0.5]], dtype=np.float32))
    sparse = written(write_sparse, row, np.array([0.0], dtype=np.float32))
    assert sparse.hex() == (
        "0a23d7ce33000000" "0a1d0a0676616c756573121312110a080000e0400000003f120202041a0105"
        "12120a0676616c756573120812060a0400000000" "00"
    )
