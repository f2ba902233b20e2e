"""A dmlc-split record whose plain (ml-io) join also parses: the join must still be the dmlc one.

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
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.recordio import MAGIC_BYTES, split_frames_dmlc
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
