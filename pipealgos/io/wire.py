"""Just enough of the protobuf wire format to locate the tensors inside a Record payload.

Used by the dense fast path to learn, from one record, where the feature and label values
sit; everything else about the record is then checked byte-for-byte against that template.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

# Value.oneof field numbers that hold fixed-width packed values (float32, float64).
_FIXED_TENSORS = {2: np.dtype("<f4"), 3: np.dtype("<f8")}


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def iter_fields(buf: bytes, start: int, end: int):
    """Yield (field number, wire type, value start, value end) of each field in buf[start:end].

    For VARINT fields the "value" range is the varint's bytes."""
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos)
            value_end = pos + length
        elif wire_type == VARINT:
            _, value_end = read_varint(buf, pos)
        elif wire_type == FIXED32:
            value_end = pos + 4
        elif wire_type == FIXED64:
            value_end = pos + 8
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if value_end > end:
            raise ValueError("field runs past the end of its message")
        yield field, wire_type, pos, value_end
        pos = value_end


@dataclass(frozen=True)
class TensorSlot:
    """Where one dense tensor's packed values sit in a payload."""

    offset: int
    count: int
    dtype: np.dtype


def _dense_values_slot(buf: bytes, start: int, end: int) -> TensorSlot | None:
    """Parse a map entry ``{key: "values", value: Value}``; slot of a dense fixed-width tensor."""
    key = None
    slot = None
    for field, wire, vstart, vend in iter_fields(buf, start, end):
        if field == 1 and wire == LENGTH_DELIMITED:
            key = bytes(buf[vstart:vend])
        elif field == 2 and wire == LENGTH_DELIMITED:
            tensors = list(iter_fields(buf, vstart, vend))
            if len(tensors) != 1:
                return None
            kind, twire, tstart, tend = tensors[0]
            dtype = _FIXED_TENSORS.get(kind)
            if dtype is None or twire != LENGTH_DELIMITED:
                return None
            for tfield, fwire, fstart, fend in iter_fields(buf, tstart, tend):
                if tfield == 1 and fwire == LENGTH_DELIMITED:
                    if (fend - fstart) % dtype.itemsize:
                        return None
                    slot = TensorSlot(fstart, (fend - fstart) // dtype.itemsize, dtype)
                elif tfield == 2:
                    return None  # keys present: sparse
                elif tfield != 3:
                    return None
        else:
            return None
    return slot if key == b"values" else None


def dense_record_slots(payload: bytes) -> tuple[TensorSlot, TensorSlot | None] | None:
    """(features slot, label slot or None) for a dense record, or None if the record is not
    a plain dense record (sparse, int32, several feature keys, unknown fields...)."""
    features = label = None
    try:
        for field, wire, start, end in iter_fields(payload, 0, len(payload)):
            if wire != LENGTH_DELIMITED:
                return None
            if field == 1:
                if features is not None:
                    return None
                features = _dense_values_slot(payload, start, end)
                if features is None:
                    return None
            elif field == 2:
                if label is not None:
                    return None
                label = _dense_values_slot(payload, start, end)
                if label is None or label.count != 1:
                    return None
            elif field not in (3, 4, 5):
                return None
    except ValueError:
        return None
    if features is None or features.count == 0:
        return None
    return features, label
