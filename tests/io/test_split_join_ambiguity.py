"""Split records that both join conventions can read as a Record: the right join must win.

Found by the property test: a dense row ending in three floats whose bytes are the RecordIO
magic (−1804698880.0) is split by dmlc's writer into a first piece, two empty middle pieces and
a last piece holding the label. Joined plainly, the bytes still parse as a Record — with the
label swallowed into a map entry keyed by four zero bytes — so the validity check must reject
such keys and the dmlc join must win.
"""

from __future__ import annotations

import io

import numpy as np

from pipealgos.io.minibatch import concat
from pipealgos.io.protobuf import RecordDecoder, parse_record
from pipealgos.io.recordio import FIRST, LAST, MAGIC_BYTES, encode_frame, split_frames_dmlc
from pipealgos.io.stream import decode_stream
from pipealgos.io.writer import encode_dense_record


def test_dmlc_join_wins_when_the_plain_join_parses_as_garbage():
    magic_float = np.frombuffer(MAGIC_BYTES, dtype="<f4")[0]
    row = np.zeros(50, dtype=np.float32)
    row[-3:] = magic_float
    payload = encode_dense_record(row, 0.0, np.dtype(np.float32))
    framed = split_frames_dmlc(payload)
    assert framed.count(MAGIC_BYTES) == 4, "one first, two empty middle and one last frame"
    block = concat(list(decode_stream(io.BytesIO(framed), RecordDecoder("split"))))
    np.testing.assert_array_equal(block.features, row[None, :])
    np.testing.assert_array_equal(block.labels, [0.0])


# An int32 record (found by the property test) split ml-io style after 180 bytes: a multiple of
# 4, so the dmlc join is possible, and with the magic re-inserted it still parses — the varints
# absorb the 4 bytes, one of them into a non-canonical encoding. Only the plain join
# re-serialises to the same bytes, so it must win.
INT32_PAYLOAD = bytes.fromhex(
    "0ab6010a0676616c75657312ab013aa8010aa501ce03b4feffffffffffffff0176acf9ffffffffffffff01c5f9ff"
    "ffffffffffff01aaf8ffffffffffffff01c301dbfdffffffffffffff0122c805b50366e801eb0173e3ffffffff"
    "ffffffff01b5019202da049b06da03f4feffffffffffffff01a6ffffffffffffffff01c502c6fcffffffffffff"
    "ff01f5faffffffffffffff01aefdffffffffffffff01980100df0500000000000000000000000000000000000080"
    "06810112120a0676616c756573120812060a0400000000"
)


def test_plain_join_wins_when_only_it_round_trips():
    framed = encode_frame(INT32_PAYLOAD[:180], FIRST) + encode_frame(INT32_PAYLOAD[180:], LAST)
    block = concat(list(decode_stream(io.BytesIO(framed), RecordDecoder("split"))))
    expected = np.asarray(parse_record(INT32_PAYLOAD).features["values"].int32_tensor.values, dtype=np.float32)
    np.testing.assert_array_equal(block.features, expected[None, :])
    assert expected[-2:].tolist() == [768.0, 129.0]


# Eight labelled records (found by the property test), the last a float whose bytes hold the
# RecordIO magic, split dmlc style. Both joins of the last one parse and re-serialise; the
# plain join has no label. The join that agrees with the seven records before it on carrying
# a label must win (it failed with "record has no label but earlier records of this channel do").
LABELLED_STREAM = bytes.fromhex(
    "0a23d7ce220000000a0f0a0676616c756573120512031a0101120f0a0676616c75657312053a030a010000000a23d7ce"
    "220000000a0f0a0676616c756573120512031a0101120f0a0676616c75657312053a030a010000000a23d7ce22000000"
    "0a0f0a0676616c756573120512031a0101120f0a0676616c75657312053a030a010000000a23d7ce220000000a0f0a06"
    "76616c756573120512031a0101120f0a0676616c75657312053a030a010000000a23d7ce220000000a0f0a0676616c75"
    "6573120512031a0101120f0a0676616c75657312053a030a010000000a23d7ce220000000a0f0a0676616c7565731205"
    "12031a0101120f0a0676616c75657312053a030a010000000a23d7ce220000000a0f0a0676616c756573120512031a01"
    "01120f0a0676616c75657312053a030a010000000a23d7ce100000200a160a0676616c756573120c1a0a0a080a23d7ce"
    "1900006000000000d1c80642120f0a0676616c75657312053a030a0100000000"
)


def test_the_join_that_keeps_the_channels_labels_wins():
    block = concat(list(decode_stream(io.BytesIO(LABELLED_STREAM), RecordDecoder("split"), 64)))
    assert block.labels.tolist() == [0.0] * 8
    dense = block.features.toarray() if hasattr(block.features, "toarray") else block.features
    assert dense[:7].tolist() == [[0.0]] * 7 and dense[7, 0] == np.float32(12232302592.0)


def test_plain_join_wins_when_the_magic_join_leaves_a_field_record_lacks():
    """A float64 row split ml-io style in the middle of its value, after 20 bytes (found by the
    property test). With the magic re-inserted, the double's first half and the magic become
    the value (-6.5e71: infinite as float32) and its second half, ``80 96 0e 43``, parses as a
    varint field 29024 that Record does not define; both joins re-serialise to their bytes. Only
    the plain join has Record's fields alone, so it must win."""
    value = 1076215725162496.0
    payload = encode_dense_record(np.array([value]), None, np.dtype(np.float64))
    assert len(payload) == 24 and payload[16:20] == bytes(4)
    framed = encode_frame(payload[:20], FIRST) + encode_frame(payload[20:], LAST)
    block = concat(list(decode_stream(io.BytesIO(framed), RecordDecoder("split"))))
    assert block.features.tolist() == [[np.float32(value)]]
