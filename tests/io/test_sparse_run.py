"""The sparse fast path's two implementations (compiled kernel, numpy) on damaged and deviating
input: each takes only records it decodes exactly as the general path does."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from implementations import SPARSE_IMPLEMENTATIONS, sparse_implementation
from recordgen import Row

from pipealgos.io import DataError, sparse_run
from pipealgos.io.minibatch import concat
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.recordio import encode_frame
from pipealgos.io.stream import decode_stream
from pipealgos.io.writer import write_sparse


def decode_or_error(data: bytes, buffer_size: int, fast_paths: bool):
    """(the records as one minibatch, or None when there are none, or the error's problem and
    the record it names; records on the sparse fast path)."""
    decoder = RecordDecoder("test", fast_paths=fast_paths)
    try:
        blocks = list(decode_stream(io.BytesIO(data), decoder, buffer_size))
    except DataError as exc:
        return f"{exc.problem} (record {exc.record})", decoder.fast_sparse_records
    return concat(blocks) if blocks else None, decoder.fast_sparse_records


@st.composite
def damaged_sparse_streams(draw):
    """A stream as the SDK writes it (sparse rows, float32 or float64, labels or not) with a
    few bytes changed and perhaps cut short."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, dim = draw(st.integers(1, 80)), draw(st.sampled_from([1, 100, 300, 20_000, 3_000_000]))
    nnz = rng.integers(0, 12, rows)
    cells = (np.repeat(np.arange(rows), nnz), rng.integers(0, dim, nnz.sum()))
    x = sp.csr_matrix((rng.standard_normal(nnz.sum()), cells), shape=(rows, dim),
                      dtype=draw(st.sampled_from([np.float32, np.float64])))
    labels = draw(st.sampled_from([None, np.float32, np.float64, np.int64]))
    y = None if labels is None else rng.integers(0, 200, rows).astype(labels)
    out = io.BytesIO()
    write_sparse(out, x, y)
    data = bytearray(out.getvalue())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, data[at] ^ 0x01, data[at] ^ 0x80]))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged_sparse_streams(), buffer_size=st.sampled_from([256, 4096, 1 << 16]))
def test_damaged_streams_decode_as_on_the_general_path(implementation, data, buffer_size):
    with sparse_implementation(implementation):
        fast, fast_records = decode_or_error(data, buffer_size, fast_paths=True)
    general, _ = decode_or_error(data, buffer_size, fast_paths=False)
    event(f"error: {isinstance(general, str)}; sparse fast path: {fast_records > 0}")
    if isinstance(general, str) or general is None:
        assert fast == general
        return
    assert not isinstance(fast, str), fast
    for name in ("indptr", "indices", "data"):
        a, b = getattr(fast.features, name), getattr(general.features, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert fast.features.shape == general.features.shape
    assert (fast.labels is None) == (general.labels is None)
    if fast.labels is not None:
        assert np.array_equal(fast.labels, general.labels)


def frames(rows: list[Row]) -> np.ndarray:
    return np.frombuffer(b"".join(encode_frame(row.payload()) for row in rows), dtype=np.uint8)


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@pytest.mark.parametrize("bad", [
    Row([1.0, 2.0], [1], 5),  # fewer keys than values
    Row([1.0], [7], 5),  # key beyond the shape
    Row([1.0], [1], 6),  # another feature dimension
    Row([1.0], [1], 5, label=1.0),  # a label where the others have none
    Row([1.0], [1], 5, dtype="f64"),  # another tensor type
    Row([1.0], [1], 5, uid="x"),  # a field the run does not know
], ids=["key-count", "key-range", "dim", "label", "dtype", "uid"])
def test_run_ends_before_the_first_deviating_record(implementation, bad):
    good = [Row([float(i), 0.5], [0, i % 5], 5) if i % 3 else Row([], [], 5) for i in range(7)]
    buf = frames(good + [bad] + good)
    with sparse_implementation(implementation):
        run = sparse_run.decode_sparse_run(buf, 0, len(buf), None, None, 1 << 20)
    assert run.count == 7 and run.nbytes == len(frames(good)) and run.feature_dim == 5
    assert run.labels is None
    assert run.indptr.tolist() == [0, 0, 2, 4, 4, 6, 8, 8]
    assert run.indices.tolist() == [0, 1, 0, 2, 0, 4, 0, 0]
    assert run.data.tolist() == [1.0, 0.5, 2.0, 0.5, 4.0, 0.5, 5.0, 0.5]
    assert run.data.dtype == np.float32 and run.indices.dtype == np.int32 and run.indptr.dtype == np.int64


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
def test_window_and_end_bound_the_run(implementation):
    buf = frames([Row([1.0], [i % 5], 5, label=float(i)) for i in range(10)])
    stride = len(buf) // 10
    with sparse_implementation(implementation):
        # Frames whose header starts within the window; whole frames before `end` only.
        assert sparse_run.decode_sparse_run(buf, 0, len(buf), 5, True, 3 * stride + 8).count == 4
        assert sparse_run.decode_sparse_run(buf, 0, 5 * stride - 1, 5, True, 1 << 20).count == 4
        run = sparse_run.decode_sparse_run(buf, 2 * stride, len(buf), 5, True, 1 << 20)
        assert run.count == 8 and run.labels.tolist() == [float(i) for i in range(2, 10)]
        # What the stream established already must agree.
        assert sparse_run.decode_sparse_run(buf, 0, len(buf), 6, None, 1 << 20) is None
        assert sparse_run.decode_sparse_run(buf, 0, len(buf), None, False, 1 << 20) is None


def test_the_compiled_kernel_is_built():
    """The install compiles pipealgos/io/_sparse_kernel.c; without it every sparse run takes the
    ~5x slower numpy path. A missing kernel is a broken install, not a reason to skip."""
    assert sparse_run._sparse_kernel is not None, (
        "pipealgos.io._sparse_kernel is not built: install gcc and the Python headers, then reinstall "
        "(`pip install -e .`); `make test` does this")


def test_kernel_checks_its_arguments_and_output_sizes():
    walk = sparse_run._sparse_kernel.walk
    buf = frames([Row([1.0, 2.0], [1, 3], 5)] * 3)
    assert walk(buf, 0, len(buf), 1 << 20, -1, -1) == (3, len(buf), 6, 5, False)
    with pytest.raises(ValueError):
        walk(buf, 2, len(buf), 1 << 20, -1, -1)  # not 4-aligned
    with pytest.raises(ValueError):
        walk(buf, 0, len(buf) + 4, 1 << 20, -1, -1)  # past the buffer
    with pytest.raises(ValueError):  # indices must be 4-byte items
        walk(buf, 0, len(buf), 1 << 20, 5, 0, (np.empty(6, np.float32), np.empty(6, np.int64), np.empty(4, np.int64), None))
    # Outputs too small for the run: filled as far as they go, never past their end.
    data, indices, indptr = np.empty(3, np.float32), np.empty(3, np.int32), np.empty(4, np.int64)
    assert walk(buf, 0, len(buf), 1 << 20, 5, 0, (data, indices, indptr, None))[:3] == (1, len(buf) // 3, 2)
    assert indptr[:2].tolist() == [0, 2] and indices[:2].tolist() == [1, 3]
