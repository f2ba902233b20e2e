"""Splitting objects into records and requests; gzip input."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from pipealgos.io import write_dense
from pipealgos.io.recordio import encode_frame, iter_records, split_frames_dmlc
from pipealgos.platform.runner.storage import StoredObject
from pipealgos.platform.transform.reader import InputError, inflate
from pipealgos.platform.transform.records import Splitter

OBJ = StoredObject("s3://bucket/in/part-1", 0, "part-1")


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def recordio(rows: int, seed: int = 0) -> bytes:
    out = io.BytesIO()
    write_dense(out, np.random.default_rng(seed).normal(size=(rows, 5)).astype(np.float32))
    return out.getvalue()


@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize("multi", [True, False])
def test_recordio_batches_hold_whole_records_in_order_under_the_limit(chunk, multi):
    data = recordio(50)
    batches = list(Splitter(OBJ, "RecordIO", 300, multi).batches(chunked(data, chunk)))
    assert b"".join(b.payload for b in batches) == data
    assert all(len(b.payload) <= 300 for b in batches)
    assert [b.last for b in batches] == [False] * (len(batches) - 1) + [True]
    records = [b.record(i) for b in batches for i in range(len(b))]
    assert [list(iter_records(io.BytesIO(r))) for r in records] == [[r] for r in iter_records(io.BytesIO(data))]
    if multi:
        assert len(batches) < 50 and all(len(b.payload) + len(batches[0].record(0)) > 300 for b in batches[:-1])
    else:
        assert len(batches) == 50


def test_a_split_recordio_record_stays_one_record():
    payload = b"\x01\x02\x03\x04" + encode_frame(b"")[:4] + b"tail"  # the magic, 4-aligned, splits it
    data = encode_frame(b"first") + split_frames_dmlc(payload) + encode_frame(b"last")
    batches = list(Splitter(OBJ, "RecordIO", 1000, False).batches(chunked(data, 5)))
    assert [len(b) for b in batches] == [1, 1, 1]
    assert batches[1].payload == split_frames_dmlc(payload)
    assert batches[2].describe(0) == f"record 3 (1-based), byte offset {len(encode_frame(b'first')) + len(batches[1].payload)}"


def test_lines_skip_blank_ones_and_are_named_by_line_number():
    data = b"1,2\n\n3,4\r\n  \n5,6"
    batches = list(Splitter(OBJ, "Line", 1000, False).batches(chunked(data, 3)))
    assert [b.payload for b in batches] == [b"1,2\n", b"3,4\r\n", b"5,6"]
    assert [b.describe(0) for b in batches] == ["line 1", "line 3", "line 5"]
    multi = list(Splitter(OBJ, "Line", 1000, True).batches([data]))
    assert len(multi) == 1 and len(multi[0]) == 3 and multi[0].lines == [1, 3, 5]


def test_split_type_none_sends_the_object_whole():
    batches = list(Splitter(OBJ, "None", 100, True).batches([b"abc", b"def"]))
    assert [(b.payload, len(b), b.last) for b in batches] == [(b"abcdef", 1, True)]
    assert batches[0].describe(0) == "the whole object (SplitType None)"
    with pytest.raises(InputError, match="more than 5 bytes .*SplitType None"):
        list(Splitter(OBJ, "None", 5, True).batches([b"abc", b"def"]))


def test_an_empty_object_gives_one_empty_last_batch():
    assert [(len(b), b.last) for b in Splitter(OBJ, "Line", 100, True).batches([])] == [(0, True)]


def test_a_record_over_the_payload_limit_is_named():
    with pytest.raises(InputError, match=r"s3://bucket/in/part-1: line 2 is 11 bytes, more than MaxPayloadInMB"):
        list(Splitter(OBJ, "Line", 10, True).batches([b"short\n0123456789\n"]))


@pytest.mark.parametrize("data, fragment", [
    (b"not recordio at all", "not a RecordIO frame at byte offset 0"),
    (encode_frame(b"x" * 40)[:-8], "ends inside record 1"),
])
def test_bad_recordio_names_the_object_and_offset(data, fragment):
    with pytest.raises(InputError, match=fragment):
        list(Splitter(OBJ, "RecordIO", 1000, True).batches([data]))


def test_gzip_members_inflate_in_bounded_pieces():
    data = gzip.compress(b"a" * 100_000) + gzip.compress(b"bc")
    pieces = list(inflate(iter(chunked(data, 17)), "s3://b/x.gz", 4096))
    assert b"".join(pieces) == b"a" * 100_000 + b"bc" and max(map(len, pieces)) <= 4096


@pytest.mark.parametrize("data, fragment", [
    (gzip.compress(b"a" * 1000)[:-12], "ends early"),
    (b"plain text, not gzip", "not valid gzip data"),
])
def test_bad_gzip_names_the_object(data, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        list(inflate(iter([data]), "s3://b/x.gz", 4096))
    assert "s3://b/x.gz" in str(info.value)
