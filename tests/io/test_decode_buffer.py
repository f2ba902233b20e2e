"""Decoding bytes in place (``decode_buffer``) gives what reading them as a stream gives."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp

from pipealgos.io import DataError, write_records
from pipealgos.io.csv import CsvDecoder
from pipealgos.io.minibatch import concat
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.stream import decode_buffer, decode_stream


def _both(data: bytes, make_decoder, chunk: int):
    in_place = concat(list(decode_buffer(data, make_decoder(), chunk)))
    streamed = concat(list(decode_stream(io.BytesIO(data), make_decoder(), 1 << 16)))
    return in_place, streamed


@pytest.mark.parametrize("chunk", [16, 1000, 1 << 20])
@pytest.mark.parametrize("sparse", [False, True])
def test_recordio_in_place_equals_streamed(chunk, sparse):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 40)).astype(np.float32) * (rng.random((300, 40)) < 0.2)
    out = io.BytesIO()
    write_records(out, sp.csr_matrix(x) if sparse else x, rng.integers(0, 2, 300).astype(np.float32))
    a, b = _both(out.getvalue(), lambda: RecordDecoder("t"), chunk)
    np.testing.assert_array_equal(a.features.toarray() if sparse else a.features, x)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_csv_lines_longer_than_the_chunk():
    x = np.arange(600, dtype=np.float32).reshape(20, 30)
    text = "".join(",".join(f"{v:g}" for v in row) + "\n" for row in x).encode()
    a, b = _both(text, lambda: CsvDecoder("t", label_size=0), 8)
    np.testing.assert_array_equal(a.features, x)
    np.testing.assert_array_equal(b.features, x)


def test_good_records_then_the_error():
    out = io.BytesIO()
    write_records(out, np.ones((5, 3), np.float32))
    data = out.getvalue() + b"\x00" * 8
    rows = 0
    with pytest.raises(DataError, match="magic"):
        for block in decode_buffer(data, RecordDecoder("t")):
            rows += block.size
    assert rows == 5
