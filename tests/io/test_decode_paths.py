"""The fast paths (dense template, sparse runs) and the general upb path give identical arrays."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from implementations import SPARSE_IMPLEMENTATIONS, sparse_implementation
from recordgen import Row, as_dense, split_frames_plain

from pipealgos.io.minibatch import concat
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.recordio import encode_frame, split_frames_dmlc
from pipealgos.io.stream import decode_stream
from pipealgos.io.writer import write_dense, write_sparse

# A float32 whose bytes are the RecordIO magic: inside a payload it must not be taken for a frame.
MAGIC_FLOAT = struct.unpack("<f", struct.pack("<I", 0xCED7230A))[0]


def decode(data: bytes, buffer_size: int = 1 << 16, fast_paths: bool = True):
    decoder = RecordDecoder("test", fast_paths=fast_paths)
    blocks = list(decode_stream(io.BytesIO(data), decoder, buffer_size))
    return concat(blocks), decoder


def assert_identical(a, b) -> None:
    assert sp.issparse(a.features) == sp.issparse(b.features)
    if sp.issparse(a.features):
        for name in ("indptr", "indices", "data"):
            x, y = getattr(a.features, name), getattr(b.features, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    else:
        assert a.features.dtype == b.features.dtype == np.float32
        assert np.array_equal(a.features, b.features)
    assert a.features.shape == b.features.shape
    if a.labels is None:
        assert b.labels is None
    else:
        assert a.labels.dtype == b.labels.dtype == np.float32
        assert np.array_equal(a.labels, b.labels)


floats32 = st.one_of(
    st.sampled_from([0.0, 1.0, -2.5, MAGIC_FLOAT]),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
)


@st.composite
def rows(draw, dim: int, labelled: bool, label_dtype: str):
    dtype = draw(st.sampled_from(["f32", "f32", "f64", "i32"]))
    number = st.integers(-1000, 1000) if dtype == "i32" else floats32
    if dim <= 200 and draw(st.booleans()):
        values, keys = draw(st.lists(number, min_size=dim, max_size=dim)), None
    else:
        keys = draw(st.lists(st.integers(0, dim - 1), unique=True, max_size=min(dim, 12)))
        if draw(st.booleans()):
            keys.sort()
        values = draw(st.lists(number, min_size=len(keys), max_size=len(keys)))
    label = None
    if labelled:
        label = draw(st.integers(0, 200)) if label_dtype == "i32" else draw(floats32)
    uid = draw(st.sampled_from([None, None, None, "r", "row-17"]))
    return Row(values, keys, dim, dtype, label, label_dtype, uid)


@st.composite
def streams(draw):
    """A stream: runs of similar records (so fast paths get going) with odd ones between."""
    dim = draw(st.sampled_from([1, 3, 50, 130, 20000]))
    labelled = draw(st.booleans())
    label_dtype = draw(st.sampled_from(["f32", "f64", "i32"]))
    frames, all_rows = [], []
    for _ in range(draw(st.integers(1, 5))):
        row = draw(rows(dim, labelled, label_dtype))
        repeat = draw(st.integers(1, 40))
        for i in range(repeat):
            current = row if i % 7 else draw(rows(dim, labelled, label_dtype))
            payload = current.payload()
            framing = draw(st.sampled_from(["whole"] * 8 + ["plain-split", "dmlc"]))
            if framing == "plain-split":
                frames.append(split_frames_plain(payload, [draw(st.integers(1, max(1, len(payload) - 1)))]))
            elif framing == "dmlc":
                frames.append(split_frames_dmlc(payload))
            else:
                frames.append(encode_frame(payload))
            all_rows.append(current)
    return b"".join(frames), all_rows


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=streams(), buffer_size=st.integers(16, 5000))
def test_fast_and_general_paths_agree(implementation, stream, buffer_size):
    data, written = stream
    with sparse_implementation(implementation):
        fast, fast_decoder = decode(data, buffer_size)
    event(f"sparse fast path: {fast_decoder.fast_sparse_records > 0}")
    event(f"dense fast path: {fast_decoder.fast_records > fast_decoder.fast_sparse_records}")
    general, slow_decoder = decode(data, buffer_size, fast_paths=False)
    assert slow_decoder.fast_records == 0
    assert_identical(fast, general)
    # The truth is what was written (a third decoder would share the join question).
    expected = np.vstack([r.dense_row() for r in written])
    assert np.array_equal(as_dense(fast.features), expected)
    if written[0].label is None:
        assert fast.labels is None
    else:
        assert np.array_equal(fast.labels, np.array([r.label for r in written], dtype=np.float32))


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_dense_stream_takes_the_fast_path(labelled, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 50)).astype(dtype)
    y = rng.integers(0, 2, 3000).astype(np.float32) if labelled else None
    out = io.BytesIO()
    write_dense(out, x, y)
    batch, decoder = decode(out.getvalue(), 1 << 20)
    assert decoder.fast_records >= 3000 - 1 - 10  # the first record of each buffer may go the general way
    assert np.array_equal(batch.features, x.astype(np.float32))
    assert_identical(batch, decode(out.getvalue(), 1 << 20, fast_paths=False)[0])


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@pytest.mark.parametrize("label_dtype", [None, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_sparse_stream_takes_the_sparse_fast_path(dtype, label_dtype, implementation):
    rng = np.random.default_rng(2)
    n, dim = 3000, 100_000
    nnz = rng.integers(0, 60, n)
    indptr = np.concatenate([[0], np.cumsum(nnz)])
    indices = np.concatenate([np.sort(rng.choice(dim, k, replace=False)) for k in nnz])
    x = sp.csr_matrix((rng.standard_normal(indptr[-1]).astype(dtype), indices, indptr), shape=(n, dim))
    y = None if label_dtype is None else rng.integers(0, 100, n).astype(label_dtype)
    out = io.BytesIO()
    write_sparse(out, x, y)
    with sparse_implementation(implementation):
        batch, decoder = decode(out.getvalue(), 1 << 20)
    assert decoder.fast_sparse_records >= n * 0.95, (decoder.fast_sparse_records, n)
    assert (batch.features != x.astype(np.float32)).nnz == 0
    if y is not None:
        assert np.array_equal(batch.labels, y.astype(np.float32))
    assert_identical(batch, decode(out.getvalue(), 1 << 20, fast_paths=False)[0])


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
def test_irregular_stream_backs_off_to_the_general_path(implementation):
    """Alternating layouts: the sparse path is tried rarely, results stay identical."""
    frames = []
    for i in range(600):
        row = Row([1.0, float(i)], [1, 3], 5, uid=None if i % 2 else f"u{i}")
        frames.append(encode_frame(row.payload()))
    data = b"".join(frames)
    with sparse_implementation(implementation):
        fast, decoder = decode(data)
    assert_identical(fast, decode(data, fast_paths=False)[0])
    assert decoder.fast_sparse_records < 60
