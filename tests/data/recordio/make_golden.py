"""Regenerate the tiny RecordIO-protobuf files of this folder (see README.md for each).

Run from the repository root: ``.venv/bin/python tests/data/recordio/make_golden.py``.
Records are built with the upb protobuf runtime and framed by hand, so each corruption is
exactly the one described and nothing else. The output is deterministic; the test
``test_recordio_golden.py::test_our_golden_files_are_reproducible`` checks the committed
files against it.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[2]))

from pipealgos.io import record_pb2  # noqa: E402
from pipealgos.io.recordio import MAGIC, encode_frame, split_frames_dmlc  # noqa: E402

# A float32 whose four bytes are the RecordIO magic.
MAGIC_FLOAT = struct.unpack("<f", struct.pack("<I", MAGIC))[0]


def dense(values, label=None) -> bytes:
    record = record_pb2.Record()
    record.features["values"].float32_tensor.values.extend(values)
    if label is not None:
        record.label["values"].float32_tensor.values.append(label)
    return record.SerializeToString()


def sparse(keys, values, dim, label=None) -> bytes:
    record = record_pb2.Record()
    tensor = record.features["values"].float32_tensor
    tensor.values.extend(values)
    tensor.keys.extend(keys)
    tensor.shape.append(dim)
    if label is not None:
        record.label["values"].float32_tensor.values.append(label)
    return record.SerializeToString()


def good_pair() -> bytes:
    """Two whole dense records [1, 2, 3, 4]/0 and [5, 6, 7, 8]/1: every corrupt file starts with them."""
    return encode_frame(dense([1, 2, 3, 4], 0.0)) + encode_frame(dense([5, 6, 7, 8], 1.0))


def build() -> dict[str, bytes]:
    third = encode_frame(dense([9, 10, 11, 12], 0.0))
    no_values = record_pb2.Record()
    no_values.features["pixels"].float32_tensor.values.extend([1, 2, 3, 4])
    no_values.label["values"].float32_tensor.values.append(0.0)
    files = {
        # 4 dense values put the features at payload offsets 16..28, all 4-aligned, so a
        # magic-valued feature makes dmlc-core's writer split the record there.
        "dmlc_split.pbr": b"".join(
            [
                encode_frame(dense([1, 2, 3, 4], 0.0)),
                split_frames_dmlc(dense([1, MAGIC_FLOAT, 3, 4], 1.0)),
                split_frames_dmlc(dense([MAGIC_FLOAT, 2, MAGIC_FLOAT, 4], 0.0)),
                encode_frame(dense([5, 6, 7, 8], 1.0)),
            ]
        ),
        "wrong_magic.pbr": good_pair() + struct.pack("<I", 0xDEADBEEF) + third[4:],
        "truncated_header.pbr": good_pair() + third[:6],
        "truncated_payload.pbr": good_pair() + third[:20],
        "length_past_eof.pbr": good_pair() + third[:4] + struct.pack("<I", 1000) + third[8:],
        "not_a_record.pbr": good_pair() + encode_frame(b"\xff\xff\xff\xff\xff"),
        "no_values.pbr": good_pair() + encode_frame(no_values.SerializeToString()),
        "sparse_key_out_of_range.pbr": b"".join(
            encode_frame(sparse(k, v, 4, label)) for k, v, label in
            [([0, 2], [1, 2], 0.0), ([1], [3], 1.0), ([1, 4], [5, 6], 0.0)]
        ),
        "nan.pbr": good_pair() + encode_frame(dense([1, float("nan"), 3, 4], 0.0)),
        "inf.pbr": good_pair() + encode_frame(dense([1, 2, float("-inf"), 4], 0.0)),
    }
    return files


if __name__ == "__main__":
    for name, data in build().items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
