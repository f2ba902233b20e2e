"""Sparse shapes and keys are range-checked as they are decoded, on every path (issue 12, item 13):
a shape whose product no int64 index can address, or that a fixed-width product would wrap,
is a DataError naming the record, never an OverflowError, a negative size or a silent wrap.
The limit is MAX_FEATURE_DIM = 2**31 - 1 (int32 column indices)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp
from implementations import SPARSE_IMPLEMENTATIONS, sparse_implementation

from pipealgos.io import DataError, record_pb2
from pipealgos.io.minibatch import MAX_FEATURE_DIM, concat
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.recordio import encode_frame
from pipealgos.io.stream import decode_stream
from pipealgos.io.writer import write_sparse

GOOD_ROWS = 40  # SDK-written sparse records first, so the fast path is running when the odd one comes


def sparse_record(keys: list[int], shape: list[int], values: list[float] | None = None) -> bytes:
    record = record_pb2.Record()
    tensor = record.features["values"].float32_tensor
    tensor.values.extend(values if values is not None else [1.0] * len(keys))
    tensor.keys.extend(keys)
    tensor.shape.extend(shape)
    return encode_frame(record.SerializeToString())


def stream_with(odd: bytes, dim: int) -> bytes:
    rows = np.arange(GOOD_ROWS)
    good = sp.csr_matrix((np.ones(GOOD_ROWS, np.float32), (rows, rows % min(dim, 7))), shape=(GOOD_ROWS, dim))
    out = io.BytesIO()
    write_sparse(out, good)
    return out.getvalue() + odd


def decode(data: bytes, implementation: str, fast_paths: bool = True):
    with sparse_implementation(implementation):
        return concat(list(decode_stream(io.BytesIO(data), RecordDecoder("test.pbr", fast_paths=fast_paths))))


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [
    [2**31], [2**40],  # beyond int32 column indices
    [2**63], [2**64 - 1],  # beyond int64 (once an OverflowError from scipy or the kernel)
    [2**62, 3],  # product beyond int64 (once a negative-size ValueError)
    [2**32, 2**32],  # product 2**64 (once accepted as width 0)
    [2**33 + 1, 2**31],  # product 2**64 + 2**31 (once accepted as 2**31)
    [0], [5, 0],  # no features at all
])
def test_shapes_no_index_can_address_name_the_record(implementation, shape):
    with pytest.raises(DataError) as caught:
        decode(stream_with(sparse_record([0], shape), 10), implementation)
    assert caught.value.record == GOOD_ROWS and caught.value.source == "test.pbr"
    assert f"sparse shape {shape}" in caught.value.problem and str(MAX_FEATURE_DIM) in caught.value.problem


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@pytest.mark.parametrize("shape, key", [([2**31 - 1], 2**31 - 1), ([2**28], 2**28), ([3, 4], 12), ([2**30], 2**64 - 1)])
def test_keys_at_or_beyond_the_shape_name_the_record(implementation, shape, key):
    dim = int(np.prod(shape))
    with pytest.raises(DataError, match="out of range") as caught:
        decode(stream_with(sparse_record([1, key], shape), dim), implementation)
    assert caught.value.record == GOOD_ROWS


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@pytest.mark.parametrize("dim", [2**28 - 1, 2**28, 2**31 - 1])
def test_wide_but_addressable_shapes_decode_exactly(implementation, dim):
    """Up to 2**28 - 1 the fast paths take them (the shape is a varint of at most 4 bytes);
    wider ones go through the general path."""
    batch = decode(stream_with(sparse_record([3, dim - 1], [dim], [2.0, 5.0]), dim), implementation)
    assert batch.features.shape == (GOOD_ROWS + 1, dim)
    last = batch.features[GOOD_ROWS]
    assert list(last.indices) == [3, dim - 1] and list(last.data) == [2.0, 5.0]


def test_two_dimensional_shape_is_row_major_product():
    batch = decode(sparse_record([0, 11], [3, 4]), "numpy", fast_paths=False)
    assert batch.features.shape == (1, 12) and list(batch.features.indices) == [0, 11]


def test_dense_record_with_no_values_is_refused():
    record = record_pb2.Record()
    record.features["values"].float32_tensor.values.extend([])
    record.features["values"].float32_tensor.SetInParent()
    with pytest.raises(DataError, match="empty") as caught:
        decode(encode_frame(record.SerializeToString()), "numpy")
    assert caught.value.record == 0


def test_serve_refuses_an_unaddressable_shape_with_a_request_error():
    from pipealgos.serve.formats import RequestError, decode_request

    with pytest.raises(RequestError, match=r"sparse shape \[9223372036854775808\]"):
        decode_request(sparse_record([0], [2**63]), "application/x-recordio-protobuf", 10)
