"""Build RecordIO-protobuf streams record by record with upb.

Tests use these to make inputs the writers never produce (int32 features, mixed dense and
sparse rows, split frames); each :class:`Row` also knows the dense row it stands for, which
is the expected decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pipealgos.io import record_pb2
from pipealgos.io.recordio import FIRST, LAST, MIDDLE, encode_frame

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


def as_dense(features) -> np.ndarray:
    return features.toarray() if sp.issparse(features) else np.asarray(features)
