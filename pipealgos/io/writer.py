"""numpy / scipy (+ labels) -> RecordIO-protobuf, byte-identical to the SageMaker SDK v2 writers.

``write_dense`` matches ``sagemaker.amazon.common.write_numpy_to_dense_tensor`` and
``write_sparse`` matches ``write_spmatrix_to_sparse_tensor``: one Record per row, features
under ``values``, the label (if given) under ``label["values"]``, sparse rows with ``keys``
and ``shape = [n_cols]``. The tensor type follows the dtype as in the SDK (float32 ->
Float32Tensor, float64 -> Float64Tensor, int64 -> Int32Tensor); other float dtypes are cast
to float32 and other integer dtypes to int32 rather than refused.

Dense float rows are written by filling a byte template with numpy, not row by row.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from . import record_pb2
from .recordio import HEADER, encode_frame
from .wire import dense_record_slots

_CHUNK_ROWS = 1 << 15
_TENSOR_FIELD = {np.dtype(np.float32): "float32_tensor", np.dtype(np.float64): "float64_tensor",
                 np.dtype(np.int64): "int32_tensor", np.dtype(np.int32): "int32_tensor"}


def _normalise(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype in _TENSOR_FIELD:
        return array
    if np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise ValueError("integer values do not fit an Int32Tensor")
        return array.astype(np.int32)
    raise ValueError(f"unsupported dtype {array.dtype}")


def _set_tensor(value: record_pb2.Value, dtype: np.dtype, values, keys=None, shape=None) -> None:
    tensor = getattr(value, _TENSOR_FIELD[dtype])
    tensor.values.extend(values)
    if keys is not None:
        tensor.keys.extend(keys)
    if shape is not None:
        tensor.shape.extend(shape)


def encode_dense_record(row: np.ndarray, label=None, label_dtype=None) -> bytes:
    """One dense Record payload (the SDK's exact bytes for the same row and label)."""
    record = record_pb2.Record()
    _set_tensor(record.features["values"], row.dtype, row.tolist())
    if label is not None:
        _set_tensor(record.label["values"], label_dtype, [label])
    return record.SerializeToString()


def write_dense(out: BinaryIO, array: np.ndarray, labels: np.ndarray | None = None) -> int:
    """Write a 2-D array (and optional 1-D labels) as dense records. Returns the row count."""
    array = _normalise(array)
    if array.ndim != 2:
        raise ValueError("array must be 2-D (rows x features)")
    if labels is not None:
        labels = _normalise(labels)
        if labels.ndim != 1 or len(labels) != len(array):
            raise ValueError(f"labels must be 1-D with {len(array)} entries, got shape {labels.shape}")
    n = len(array)
    if not n:
        return 0
    fixed_width = array.dtype.kind == "f" and (labels is None or labels.dtype.kind == "f")
    if not fixed_width:
        for i in range(n):
            label = None if labels is None else labels[i].item()
            out.write(encode_frame(encode_dense_record(array[i], label, None if labels is None else labels.dtype)))
        return n
    first = encode_dense_record(array[0], None if labels is None else labels[0].item(),
                                None if labels is None else labels.dtype)
    frame = encode_frame(first)
    features_slot, label_slot = dense_record_slots(first)
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(n, start + _CHUNK_ROWS)
        block = np.tile(np.frombuffer(frame, dtype=np.uint8), (stop - start, 1))
        _fill(block, HEADER.size + features_slot.offset, array[start:stop])
        if label_slot is not None:
            _fill(block, HEADER.size + label_slot.offset, labels[start:stop, None])
        out.write(block.tobytes())
    return n


def _fill(block: np.ndarray, offset: int, values: np.ndarray) -> None:
    width = values.shape[1] * values.dtype.itemsize
    block[:, offset : offset + width] = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).view(np.uint8)


def write_sparse(out: BinaryIO, matrix, labels: np.ndarray | None = None) -> int:
    """Write a scipy sparse matrix (and optional labels) as sparse records. Returns the row count."""
    if not sp.issparse(matrix):
        raise TypeError("matrix must be a scipy sparse matrix")
    csr = sp.csr_matrix(matrix)
    data = _normalise(csr.data)
    if labels is not None:
        labels = _normalise(labels)
        if labels.ndim != 1 or len(labels) != csr.shape[0]:
            raise ValueError(f"labels must be 1-D with {csr.shape[0]} entries, got shape {labels.shape}")
    n_cols = csr.shape[1]
    record = record_pb2.Record()
    for i in range(csr.shape[0]):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        record.Clear()
        _set_tensor(record.features["values"], data.dtype, data[lo:hi].tolist(),
                    csr.indices[lo:hi].astype(np.uint64).tolist(), [n_cols])
        if labels is not None:
            _set_tensor(record.label["values"], labels.dtype, [labels[i].item()])
        out.write(encode_frame(record.SerializeToString()))
    return csr.shape[0]


def write_records(out: BinaryIO, features, labels: np.ndarray | None = None) -> int:
    """Dense or sparse, whichever ``features`` is."""
    if sp.issparse(features):
        return write_sparse(out, features, labels)
    return write_dense(out, features, labels)
