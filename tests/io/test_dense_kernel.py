"""The compiled dense path (``_sparse_kernel.dense_gather``, behind the decoder's dense template)
gives what the numpy template path gives: the same blocks, and on damaged input the same error
(message, record, byte offset) after the same good records."""

from __future__ import annotations

import io

import numpy as np
import pytest
from implementations import sparse_implementation
from recordgen import Row

from pipealgos.io import DataError, sparse_run
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.recordio import encode_frame
from pipealgos.io.stream import aligned_buffer, decode_stream
from pipealgos.io.writer import write_dense

RNG = np.random.default_rng(5)


def dense_bytes(n: int, dim: int, labels: bool = True) -> bytes:
    out = io.BytesIO()
    write_dense(out, RNG.standard_normal((n, dim)).astype(np.float32),
                RNG.standard_normal(n).astype(np.float32) if labels else None)
    return out.getvalue()


def float64_bytes(n: int, dim: int, values: np.ndarray | None = None) -> bytes:
    """Records with float64 features and float64 labels (the writer makes float32 ones)."""
    values = RNG.standard_normal((n, dim)) if values is None else values
    return b"".join(encode_frame(Row(list(row), None, dim, "f64", label=float(i), label_dtype="f64").payload())
                    for i, row in enumerate(values))


def outcome(data: bytes, implementation: str, buffer_size: int = 4096):
    """(features, labels, fast records, error text, record, offset) of decoding ``data``."""
    decoder = RecordDecoder("src")
    blocks, error = [], None
    with sparse_implementation(implementation):
        try:
            for block in decode_stream(io.BytesIO(data), decoder, buffer_size):
                blocks.append(block)
        except DataError as exc:
            error = (str(exc), exc.record, exc.offset)
    features = np.vstack([b.dense() for b in blocks]) if blocks else None
    labels = [None if b.labels is None else b.labels.tolist() for b in blocks]
    return features, labels, decoder.fast_records, error


def assert_paths_agree(data: bytes, buffer_size: int = 4096) -> None:
    got = outcome(data, "c", buffer_size)
    want = outcome(data, "numpy", buffer_size)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1:] == want[1:]


def test_the_kernel_is_built():
    assert sparse_run.implementation == "c"  # built by setup.py: a missing kernel fails, not skips


@pytest.mark.parametrize("dim", [1, 7, 50, 300])
@pytest.mark.parametrize("labels", [True, False])
def test_kernel_and_numpy_give_the_same_blocks(dim, labels):
    data = dense_bytes(500, dim, labels)
    features, _, fast, error = outcome(data, "c")
    assert error is None and features.shape == (500, dim) and fast >= 400  # the fast path was really taken
    assert_paths_agree(data)


def test_float64_values_are_cast_as_numpy_casts_them():
    values = RNG.standard_normal((300, 9)) * 1e30
    values[::7, 3] = 1.0 + 2.0**-30  # rounds to 1.0 in float32
    assert_paths_agree(float64_bytes(300, 9, values))


@pytest.mark.parametrize("where", ["features", "label"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_reported_at_its_record(where, bad):
    x = RNG.standard_normal((400, 6)).astype(np.float32)
    y = np.zeros(400, np.float32)
    (x[217] if where == "features" else y)[[3 if where == "features" else 217]] = bad
    out = io.BytesIO()
    write_dense(out, x, y)
    _, _, _, error = outcome(out.getvalue(), "c", buffer_size=1 << 16)
    assert error is not None and error[1] == 217 and f"NaN or infinity in {where}" in error[0]
    assert_paths_agree(out.getvalue(), buffer_size=1 << 16)


def test_a_float64_beyond_float32_range_is_infinite_after_the_cast():
    values = RNG.standard_normal((200, 4))
    values[150, 1] = 1e40  # finite as float64
    data = float64_bytes(200, 4, values)
    _, _, _, error = outcome(data, "c", buffer_size=1 << 16)
    assert error is not None and error[1] == 150 and "NaN or infinity in features" in error[0]
    assert_paths_agree(data, buffer_size=1 << 16)


@pytest.mark.parametrize("labels", [True, False])
def test_every_damaged_byte_gives_the_same_outcome(labels):
    """Each byte of a run of frames flipped in turn (headers, tags, lengths, values): the run
    ends, or the record is decoded on the general path, or the error comes, as on the numpy path."""
    data = dense_bytes(12, 3, labels)
    stride = len(data) // 12
    for at in range(4 * stride, 6 * stride):
        damaged = bytearray(data)
        damaged[at] ^= 0xA5
        assert_paths_agree(bytes(damaged), buffer_size=512)


def test_layout_changes_end_the_run_where_numpy_ends_it():
    data = dense_bytes(100, 5) + dense_bytes(100, 5, labels=False) + float64_bytes(50, 5) + dense_bytes(100, 5)
    _, _, _, error = outcome(data, "c")
    assert error is not None and error[1:] == (100, 6400)  # the label disappears at record 100
    assert_paths_agree(data)
    assert_paths_agree(dense_bytes(100, 5) + float64_bytes(100, 5))


def test_dense_gather_takes_no_frame_beyond_its_output_rows():
    data = dense_bytes(20, 4, labels=False)
    decoder = RecordDecoder("src")
    list(decode_stream(io.BytesIO(data), decoder))
    template = decoder._template
    buf = aligned_buffer(len(data))
    buf[:] = np.frombuffer(data, np.uint8)
    features = np.full((5, 4), -1, np.float32)
    args = (buf, 0, template.stride, template.word_cols, template.word_mask, template.word_want,
            template.features.offset, 4, -1, 0)
    assert sparse_run._sparse_kernel.dense_gather(*args, features, None) == (5, -1, -1)
    first = outcome(data, "numpy")[0]
    np.testing.assert_array_equal(features, first[:5])
    buf[template.stride * 2 + 4] ^= 1  # the third frame's length
    assert sparse_run._sparse_kernel.dense_gather(*args, features, None)[0] == 2


def test_dense_gather_refuses_a_layout_reaching_outside_the_frame():
    buf = aligned_buffer(64)
    words = np.zeros(1, np.uint32)
    features = np.empty((1, 4), np.float32)
    with pytest.raises(ValueError, match="outside the frame"):
        sparse_run._sparse_kernel.dense_gather(buf, 0, 16, words, words, words, 4, 4, -1, 0, features, None)
    with pytest.raises(ValueError, match="outside the frame"):
        sparse_run._sparse_kernel.dense_gather(buf, 0, 32, words + 8, words, words, 0, 4, -1, 0, features, None)


def big_blocks(data: bytes):
    """Blocks of ~1 MB (large enough for the kernel's reusable arrays), one at a time."""
    with sparse_implementation("c"):
        yield from decode_stream(io.BytesIO(data), RecordDecoder("src"), 1 << 20)


def address(block) -> int:
    return block.features.__array_interface__["data"][0]


def test_blocks_kept_by_the_consumer_are_never_overwritten():
    data = dense_bytes(40_000, 50)
    kept = list(big_blocks(data))
    assert len({address(b) for b in kept}) == len(kept) > 5
    np.testing.assert_array_equal(np.vstack([b.features for b in kept]), outcome(data, "numpy")[0])


def test_memory_of_a_dropped_block_holds_a_later_one():
    data = dense_bytes(40_000, 50)
    addresses, kept_slice = [], None
    for i, block in enumerate(big_blocks(data)):
        addresses.append(address(block))
        if i == 2:
            kept_slice = block.features[10:20]  # a view keeps its block's memory from reuse
            want = kept_slice.copy()
    assert len(set(addresses)) < len(addresses) / 2  # reused, not fresh memory per block
    assert addresses.count(addresses[2]) == 1
    np.testing.assert_array_equal(kept_slice, want)
