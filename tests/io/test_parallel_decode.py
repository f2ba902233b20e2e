"""RecordIO-protobuf decoded on several threads (pipealgos.io.parallel): the same blocks, in
the same order, and the same errors (message, record, offset) as the single decoder, with
chunks small enough that records, split records and errors fall across chunk boundaries."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp
from implementations import SPARSE_IMPLEMENTATIONS, sparse_implementation
from mlroot import FifoFeeder
from recordgen import Row, as_dense, split_frames_plain

from pipealgos.io import ChannelSpec, DataError, iter_minibatches, write_dense, write_sparse
from pipealgos.io import sparse_run
from pipealgos.io.parallel import (DECODE_THREADS_ENV, decode_buffer_parallel, decode_stream_parallel,
                                   decode_threads_from_env, record_cut, record_cut_python)
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.recordio import encode_frame
from pipealgos.io.stream import aligned_buffer, decode_stream

RNG = np.random.default_rng(11)


def dense_stream(n: int, dim: int = 7, labels: bool = True) -> bytes:
    out = io.BytesIO()
    write_dense(out, RNG.standard_normal((n, dim)).astype(np.float32),
                np.arange(n, dtype=np.float32) if labels else None)
    return out.getvalue()


def sparse_stream(n: int, dim: int = 1000) -> bytes:
    out = io.BytesIO()
    write_sparse(out, sp.random(n, dim, density=0.02, format="csr", dtype=np.float32, random_state=3),
                 np.arange(n, dtype=np.float32))
    return out.getvalue()


def sequential(data: bytes):
    return list(decode_stream(io.BytesIO(data), RecordDecoder("src")))


@pytest.fixture(params=["stream", "in place"])
def parallel(request):
    """Decode on several threads, from a stream or in place (a mapped file's path); -> blocks."""

    def decode(data: bytes, threads: int = 3, chunk: int = 4096, feature_dim=None):
        if request.param == "stream":
            return list(decode_stream_parallel(io.BytesIO(data), "src", feature_dim, threads, chunk))
        return list(decode_buffer_parallel(data, "src", feature_dim, threads, chunk))

    return decode


def joined(blocks) -> tuple[np.ndarray, np.ndarray | None]:
    features = np.vstack([as_dense(b.features) for b in blocks])
    labels = None if blocks[0].labels is None else np.concatenate([b.labels for b in blocks])
    return features, labels


def assert_same_decoding(parallel, data: bytes, **kwargs) -> None:
    want_x, want_y = joined(sequential(data))
    got_x, got_y = joined(parallel(data, **kwargs))
    np.testing.assert_array_equal(got_x, want_x)
    np.testing.assert_array_equal(got_y, want_y)


def error_of(decode) -> DataError:
    with pytest.raises(DataError) as info:
        decode()
    return info.value


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_dense_records_come_back_whole_and_in_order(parallel, threads, implementation):
    data = dense_stream(3000)
    with sparse_implementation(implementation):
        assert len(parallel(data, threads)) >= len(data) // 4096 // 2  # really cut into many chunks
        assert_same_decoding(parallel, data, threads=threads)


def test_sparse_records_come_back_whole_and_in_order(parallel):
    blocks = parallel(sparse_stream(2000))
    assert len(blocks) > 10  # many chunks, so order across chunks is really tested
    assert_same_decoding(parallel, sparse_stream(2000))


def test_split_records_across_chunk_boundaries(parallel):
    rows = [Row(list(RNG.standard_normal(300).astype(np.float32)), None, 300, label=float(i)) for i in range(40)]
    data = b"".join(split_frames_plain(r.payload(), [97, 555, 1001]) if i % 3 == 0 else encode_frame(r.payload())
                    for i, r in enumerate(rows))
    assert_same_decoding(parallel, data, chunk=2048)


def test_later_chunks_start_from_the_layout_learnt_and_still_check_it(parallel):
    """Chunks after the first start with its decoder's dense template; where the layout
    changes (sparse records between dense ones) every frame is
    still checked against it, so the blocks are the single decoder's."""
    data = dense_stream(300, dim=1000) + sparse_stream(40) + dense_stream(300, dim=1000)
    assert_same_decoding(parallel, data, chunk=8192, threads=2)


def test_a_record_longer_than_a_chunk(parallel):
    data = dense_stream(5, dim=5000) + dense_stream(50, dim=5000)
    assert_same_decoding(parallel, data, chunk=4096)


def test_cut_is_the_last_record_start_before_an_incomplete_frame():
    frame = encode_frame(b"\x0a" * 10)  # 8 + 12 bytes
    buf = aligned_buffer(64)
    data = frame * 3
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    assert record_cut(buf, len(data)) == (40, False)  # the third may continue a split record: left
    assert record_cut(buf, 50) == (40, False)
    damaged = buf.copy()
    damaged[20:24] = 0  # the second header's magic: the walk jumps over it to the third
    assert record_cut(damaged, len(data)) == (40, False)
    damaged = buf.copy()
    damaged[40:44] = 0  # the third's: no jump, the walk meets it
    assert record_cut(damaged, len(data)) == (20, True)


def test_a_wrong_cut_is_decoded_again_by_the_single_decoder(parallel, monkeypatch):
    """The cut's guess over a run of equal frames is checked only where it lands: a chunk cut
    inside a frame does not decode to its end, and the single decoder takes over from it."""
    from pipealgos.io import parallel as module

    calls = []
    right_cut = module.record_cut

    def sometimes_wrong(buf, end):
        cut, corrupt = right_cut(buf, end)
        calls.append(cut)
        return (cut - 8 if len(calls) == 3 and cut > 8 else cut), corrupt

    monkeypatch.setattr(module, "record_cut", sometimes_wrong)
    data = dense_stream(3000)
    assert_same_decoding(parallel, data, threads=2)
    assert len(calls) >= 3


def test_the_compiled_cut_walks_frames_as_the_python_one():
    """Dense runs, sparse records, split records, every end offset and damaged headers: the
    kernel's walk gives the Python walk's (cut, corrupt) exactly."""
    assert sparse_run.implementation == "c"  # built by setup.py: a missing kernel fails, not skips
    split = split_frames_plain(b"\x0a" * 40, [10, 25])
    for data in (dense_stream(30), sparse_stream(20), split + dense_stream(5) + split):
        buf = aligned_buffer(len(data) + 8)
        buf[: len(data)] = np.frombuffer(data, np.uint8)
        for end in range(0, len(data) + 1, 3):
            assert record_cut(buf, end) == record_cut_python(buf, end), end
        for at in RNG.integers(0, len(data), 20):
            damaged = buf.copy()
            damaged[at] ^= 0xFF
            assert record_cut(damaged, len(data)) == record_cut_python(damaged, len(data)), at


@pytest.mark.parametrize("implementation", SPARSE_IMPLEMENTATIONS)
@pytest.mark.parametrize("damage", ["bad record", "width", "labels", "truncated", "magic", "nan"])
def test_errors_are_those_of_the_single_decoder(parallel, damage, implementation):
    good = dense_stream(400)
    if damage == "bad record":
        data = good + encode_frame(b"\xff\xff\xff") + good
    elif damage == "width":
        data = good + dense_stream(10, dim=8)
    elif damage == "labels":
        data = good + dense_stream(10, labels=False)
    elif damage == "truncated":
        data = good[:-5]
    elif damage == "magic":
        data = good[:20000] + b"\x00" * 8 + good[20008:]
    else:
        x = np.ones((50, 7), np.float32)
        x[33, 2] = np.nan
        out = io.BytesIO()
        write_dense(out, x, np.ones(50, np.float32))
        data = good + out.getvalue()
    with sparse_implementation(implementation):
        want = error_of(lambda: sequential(data))
        got = error_of(lambda: parallel(data))
    assert str(got) == str(want)
    assert (got.record, got.offset) == (want.record, want.offset)


def test_every_good_record_before_an_error_is_delivered():
    good = dense_stream(400)
    data = good + encode_frame(b"\xff\xff\xff")
    delivered = []
    with pytest.raises(DataError):
        for block in decode_stream_parallel(io.BytesIO(data), "src", None, 2, 4096):
            delivered.append(block)
    assert sum(b.size for b in delivered) == 400


def test_channel_reads_a_fifo_on_several_threads(tmp_path, monkeypatch):
    monkeypatch.setenv(DECODE_THREADS_ENV, "3")
    data = dense_stream(20000)
    (tmp_path / "input" / "data").mkdir(parents=True)
    spec = ChannelSpec("train", tmp_path / "input" / "data", mode="Pipe")
    assert spec.decode_threads == 3
    FifoFeeder(tmp_path, "train", [data])
    batches = list(iter_minibatches(spec, 0, 1000))
    assert [b.size for b in batches] == [1000] * 20
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), np.arange(20000))


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_count_names_the_setting(monkeypatch, value):
    monkeypatch.setenv(DECODE_THREADS_ENV, value)
    with pytest.raises(DataError, match=f"{DECODE_THREADS_ENV}='{value}'"):
        decode_threads_from_env()


class BreaksAfter(io.RawIOBase):
    """A stream whose reads fail once ``size`` bytes were read (a dropped connection)."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.pos = data, size, 0

    def readinto(self, view) -> int:
        if self.pos >= self.size:
            raise OSError("connection reset")
        n = min(len(view), self.size - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def test_a_failed_read_is_raised_after_the_records_before_it():
    data = dense_stream(3000)
    delivered = []
    with pytest.raises(OSError, match="connection reset"):
        for block in decode_stream_parallel(BreaksAfter(data, len(data) // 2), "src", None, 2, 4096):
            delivered.append(block)
    _, labels = joined(delivered)
    frame = len(data) // 3000
    assert len(labels) >= (len(data) // 2 - 2 * 4096) // frame  # every chunk read whole before it
    np.testing.assert_array_equal(labels, np.arange(len(labels)))  # in order, none skipped


def test_a_consumer_stopping_early_does_not_wait_for_a_blocked_read():
    read_end, write_end = os.pipe()
    data = dense_stream(2000)
    os.write(write_end, data[:10000])  # two chunks and a part; the writer keeps the pipe open
    stream = open(read_end, "rb", buffering=0)
    blocks = decode_stream_parallel(stream, "src", None, 2, 4096)
    assert next(blocks).size > 0
    time.sleep(0.3)  # lets a decoding thread reach the read that blocks (the case under test)
    closing = threading.Thread(target=blocks.close)
    closing.start()
    closing.join(5)
    assert not closing.is_alive()  # returned although a decoding thread is blocked reading the pipe
    os.close(write_end)  # its read returns; it ends
    stream.close()


def test_ready_blocks_come_while_a_read_waits_for_data():
    """The consumer never blocks reading a later chunk while the one it waits for is ready."""
    read_end, write_end = os.pipe()
    data = dense_stream(2000)
    frame = len(data) // 2000
    whole = data[: 139 * frame]  # two 4096-byte chunks and a part; then the writer pauses
    os.write(write_end, whole)
    stream = open(read_end, "rb", buffering=0)
    blocks = decode_stream_parallel(stream, "src", None, 2, 4096)
    got = []
    taking = threading.Thread(target=lambda: got.extend(next(blocks) for _ in range(2)), daemon=True)
    taking.start()
    taking.join(5)
    ready = len(got)
    os.close(write_end)  # the rest arrives: end of stream (before asserting, so a failure cannot hang the run)
    assert ready == 2
    rest = list(blocks)
    stream.close()
    _, labels = joined(got + rest)
    np.testing.assert_array_equal(labels, np.arange(139))


def test_a_chunk_is_decoded_a_window_at_a_time_as_the_single_decoder_decodes_it():
    """A chunk larger than the decoder's window (a mapped file's chunks are) is handed over a
    window at a time: frames split across windows, frames longer than a window, split records
    and an error give the single decoder's blocks and error."""
    from pipealgos.io.parallel import _Chunk, _decode_chunk

    rows = [Row(list(RNG.standard_normal(300).astype(np.float32)), None, 300, label=float(i)) for i in range(30)]
    split = b"".join(split_frames_plain(r.payload(), [97, 555]) if i % 4 == 0 else encode_frame(r.payload())
                     for i, r in enumerate(rows))
    for data in (dense_stream(500), sparse_stream(300), split, dense_stream(40, dim=400)):  # 1,600+ byte frames
        done = _decode_chunk(_Chunk(np.frombuffer(data, np.uint8), 0, True), "src", None, None, window=1000)
        assert done.consumed == len(data)
        got, want = joined(done.blocks), joined(sequential(data))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    damaged = dense_stream(500)
    damaged = damaged[:4000] + b"\xff" * 8 + damaged[4008:]
    want_error = error_of(lambda: sequential(damaged))
    got_error = error_of(lambda: _decode_chunk(_Chunk(np.frombuffer(damaged, np.uint8), 0, True), "src", None, None,
                                               window=1000))
    assert str(got_error) == str(want_error)
