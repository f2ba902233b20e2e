"""Build RecordIO-protobuf streams record by record with upb, and read them back independently.

Tests use these to make inputs the writers never produce (int32 features, mixed dense and
sparse rows, split frames) and to compute expected arrays without going through
``pipealgos.io.protobuf``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pipealgos.io import record_pb2
from pipealgos.io.recordio import FIRST, LAST, MIDDLE, encode_frame, iter_records

TENSOR_FIELDS = {"f32": "float32_tensor", "f64": "float64_tensor", "i32": "int32_tensor"}


@dataclass
class Row:
    """One record: dense ``values`` (keys None) or sparse ``values`` at ``keys``."""

    values: list
    keys: list | None
    dim: int
    dtype: str = "f32"
    label: float | int | None = None
    label_dtype: str = "f32"
    uid: str | None = None

    def payload(self) -> bytes:
        record = record_pb2.Record()
        tensor = getattr(record.features["values"], TENSOR_FIELDS[self.dtype])
        tensor.values.extend(self.values)
        if self.keys is not None:
            tensor.keys.extend(self.keys)
            tensor.shape.append(self.dim)
        if self.label is not None:
            getattr(record.label["values"], TENSOR_FIELDS[self.label_dtype]).values.append(self.label)
        if self.uid is not None:
            record.uid = self.uid
        return record.SerializeToString()

    def dense_row(self) -> np.ndarray:
        row = np.zeros(self.dim, dtype=np.float32)
        if self.keys is None:
            row[:] = np.asarray(self.values, dtype=np.float32)
        else:
            row[np.asarray(self.keys, dtype=np.int64)] = np.asarray(self.values, dtype=np.float32)
        return row


def split_frames_plain(payload: bytes, cuts: list[int]) -> bytes:
    """Frame one record as ml-io's writer does: pieces cut anywhere, flags 1, 2..., 3."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(payload))), len(payload)]
    pieces = [payload[a:b] for a, b in zip(bounds, bounds[1:])]
    if len(pieces) == 1:
        return encode_frame(payload)
    flags = [FIRST] + [MIDDLE] * (len(pieces) - 2) + [LAST]
    return b"".join(encode_frame(p, f) for p, f in zip(pieces, flags))


def reference_decode(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Dense features (float32) and labels of a stream: upb per record, nothing else."""
    rows, labels = [], []
    for payload in iter_records(io.BytesIO(data), is_valid=_parses):
        record = record_pb2.Record()
        record.ParseFromString(payload)
        value = record.features["values"]
        tensor = getattr(value, value.WhichOneof("value"))
        values = np.asarray(tensor.values, dtype=np.float32)
        if len(tensor.keys) or (not len(values) and len(tensor.shape)):
            row = np.zeros(int(np.prod(tensor.shape)), dtype=np.float32)
            row[np.asarray(tensor.keys, dtype=np.int64)] = values
        else:
            row = values
        rows.append(row)
        if "values" in record.label:
            label = record.label["values"]
            labels.append(getattr(label, label.WhichOneof("value")).values[0])
    return np.vstack(rows), (np.asarray(labels, dtype=np.float32) if labels else None)


def _parses(payload: bytes) -> bool:
    try:
        record_pb2.Record().ParseFromString(payload)
    except Exception:
        return False
    return True


def as_dense(features) -> np.ndarray:
    return features.toarray() if sp.issparse(features) else np.asarray(features)
