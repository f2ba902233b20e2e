"""Channel sources: File-mode directories and Pipe-mode FIFOs (real FIFOs, real writers)."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import FifoFeeder, recordio_bytes

from pipealgos.io import ChannelSpec, DataError, iter_blocks, iter_minibatches
from pipealgos.io.channel import channel_files
from pipealgos.io.minibatch import concat
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.stream import decode_stream, map_file

RNG = np.random.default_rng(5)


def rows(n: int, start: float = 0.0, dim: int = 3) -> np.ndarray:
    """Rows whose first column numbers them, so order can be checked."""
    x = RNG.standard_normal((n, dim)).astype(np.float32)
    x[:, 0] = start + np.arange(n)
    return x


def read_all(spec: ChannelSpec, epoch: int = 0):
    return concat(list(iter_blocks(spec, epoch)))


# --- File mode -------------------------------------------------------------------------------

def test_file_mode_is_recursive_sorted_and_skips_hidden(tmp_path):
    root = tmp_path / "train"
    (root / "b" / "inner").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    parts = {
        "a.pbr": rows(2, 0), "b/a.pbr": rows(2, 2), "b/inner/z.pbr": rows(2, 4), "b/z.pbr": rows(2, 6), "c.pbr": rows(2, 8),
    }
    for name, x in parts.items():
        (root / name).write_bytes(recordio_bytes(x))
    (root / ".manifest").write_bytes(b"not recordio")
    (root / "b" / ".part.crc").write_bytes(b"not recordio")
    (root / ".hidden_dir" / "x.pbr").write_bytes(b"not recordio")
    names = [p.relative_to(root).as_posix() for p in channel_files(ChannelSpec("train", tmp_path))]
    assert names == ["a.pbr", "b/a.pbr", "b/inner/z.pbr", "b/z.pbr", "c.pbr"]
    assert np.array_equal(read_all(ChannelSpec("train", tmp_path)).features[:, 0], np.arange(10))


def test_each_file_starts_from_the_previous_files_layout_and_still_decodes_a_new_one_exactly(tmp_path):
    """Files of one pass hand their learnt record layout to the next file's decoder as a guess:
    a file whose records differ (sparse after dense, dense after sparse, another dense layout)
    must still decode to exactly its rows."""
    root = tmp_path / "train"
    root.mkdir()
    dense_a, dense_b, dense_c = rows(300, 0, dim=6), rows(200, 300, dim=6), rows(100, 900, dim=6)
    sparse = sp.random(400, 6, density=0.4, format="csr", dtype=np.float32, random_state=1)
    sparse_rows = sparse.toarray()
    sparse_rows[:, 0] = 500 + np.arange(400)
    (root / "1.pbr").write_bytes(recordio_bytes(dense_a))
    (root / "2.pbr").write_bytes(recordio_bytes(sp.csr_matrix(sparse_rows)))
    (root / "3.pbr").write_bytes(recordio_bytes(dense_b))
    labelled = recordio_bytes(dense_c, np.arange(100, dtype=np.float32))  # labels change the dense layout
    (root / "4.pbr").write_bytes(labelled)
    blocks = list(iter_blocks(ChannelSpec("train", tmp_path), 0))
    got = np.vstack([b.dense() for b in blocks])
    np.testing.assert_array_equal(got, np.vstack([dense_a, sparse_rows, dense_b, dense_c]))
    assert blocks[-1].labels is not None and blocks[0].labels is None


def test_map_file_maps_regular_files_only(tmp_path):
    """Regular files are mapped (decoded in place); an empty file and a FIFO are read."""
    (tmp_path / "data").write_bytes(b"abc")
    (tmp_path / "empty").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo")
    with open(tmp_path / "data", "rb", buffering=0) as stream:
        assert map_file(stream)[:] == b"abc"
    with open(tmp_path / "empty", "rb", buffering=0) as stream:
        assert map_file(stream) is None
    fd = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert map_file(os.fdopen(fd, "rb", buffering=0, closefd=False)) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("threads", [1, 3])
def test_mapped_files_decode_as_the_bytes_streamed(tmp_path, threads):
    """Files decoded in place (the File-mode path, one thread or several) give what the same
    bytes give read from a stream, dense and sparse, labelled or not, across files."""
    root = tmp_path / "train"
    root.mkdir()
    dense = rows(5000, 0, dim=9)
    sparse_rows = sp.random(3000, 9, density=0.3, format="csr", dtype=np.float32, random_state=2).toarray()
    sparse_rows[:, 0] = 5000 + np.arange(3000)
    parts = [recordio_bytes(dense), recordio_bytes(sp.csr_matrix(sparse_rows)), recordio_bytes(dense[:700])]
    for i, part in enumerate(parts):
        (root / f"{i}.pbr").write_bytes(part)
    spec = ChannelSpec("train", tmp_path, decode_threads=threads)
    want = concat(list(decode_stream(io.BytesIO(b"".join(parts)), RecordDecoder("all"))))
    np.testing.assert_array_equal(read_all(spec).dense(), want.dense())


def test_fastfile_channels_are_read_as_file_channels_are_mapped(tmp_path):
    """FastFile's files (fetched from S3 as they are read, on SageMaker) are read, not mapped:
    the same records come out."""
    root = tmp_path / "train"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.pbr").write_bytes(recordio_bytes(rows(500, 500 * i)))
    fast = read_all(ChannelSpec("train", tmp_path, mode="FastFile"))
    np.testing.assert_array_equal(fast.features, read_all(ChannelSpec("train", tmp_path)).features)
    np.testing.assert_array_equal(fast.features[:, 0], np.arange(1500))


@pytest.mark.parametrize("threads", [1, 3])
def test_an_error_in_a_mapped_file_names_the_file_and_the_offset(tmp_path, threads):
    root = tmp_path / "train"
    root.mkdir()
    good = recordio_bytes(rows(100000))
    frame = 8 + (int.from_bytes(good[4:8], "little") + 3) // 4 * 4
    at = 80000 * frame  # a header in the second 2 MiB chunk the threads take
    assert 2 << 20 < at < len(good)
    (root / "a.pbr").write_bytes(good[:at] + b"\x00" * 8 + good[at + 8:])
    with pytest.raises(DataError) as info:
        read_all(ChannelSpec("train", tmp_path, decode_threads=threads))
    message = str(info.value)
    assert str(root / "a.pbr") in message and str(at) in message and "magic" in message


def test_gzip_is_detected_by_magic_bytes_not_name(tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    x1, x2, x3 = rows(50, 0), rows(50, 50), rows(50, 100)
    (root / "1.pbr").write_bytes(gzip.compress(recordio_bytes(x1)))  # gzip without a .gz name
    (root / "2.gz").write_bytes(recordio_bytes(x2))  # a .gz name without gzip
    # Multi-member gzip (what `cat a.gz b.gz` or a parallel compressor gives).
    half = recordio_bytes(x3[:20]), recordio_bytes(x3[20:])
    (root / "3.pbr").write_bytes(gzip.compress(half[0]) + gzip.compress(half[1]))
    batch = read_all(ChannelSpec("train", tmp_path))
    assert np.array_equal(batch.features, np.vstack([x1, x2, x3]))


def test_gzip_csv_channel(tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    (root / "part.csv.gz").write_bytes(gzip.compress(b"1,2,3\n0,5,6\n"))
    batch = read_all(ChannelSpec("train", tmp_path, content_type="text/csv;label_size=1"))
    assert np.array_equal(batch.features, [[2, 3], [5, 6]]) and np.array_equal(batch.labels, [1, 0])


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    (root / "a.pbr").write_bytes(gzip.compress(recordio_bytes(rows(200)))[:-30])
    with pytest.raises(DataError) as caught:
        read_all(ChannelSpec("train", tmp_path))
    assert "channel 'train'" in str(caught.value) and str(root / "a.pbr") in str(caught.value)


def test_missing_channel_directory_and_unknown_content_type(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_all(ChannelSpec("train", tmp_path))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="content type 'application/x-parquet' cannot be read"):
        read_all(ChannelSpec("train", tmp_path, content_type="application/x-parquet"))


def test_empty_file_mode_channel_gives_no_blocks(tmp_path):
    (tmp_path / "train").mkdir()
    assert list(iter_blocks(ChannelSpec("train", tmp_path), 0)) == []


# --- Pipe mode -------------------------------------------------------------------------------

def pipe_spec(tmp_path: Path, timeout: float = 20, content_type=None) -> ChannelSpec:
    (tmp_path / "input" / "data").mkdir(parents=True, exist_ok=True)
    return ChannelSpec("train", tmp_path / "input" / "data", mode="Pipe", content_type=content_type,
                       pipe_timeout=timeout)


def test_pipe_mode_two_epochs_from_threads(tmp_path):
    spec = pipe_spec(tmp_path)
    x0, x1 = rows(3000, 0, dim=20), rows(3000, 3000, dim=20)
    feeder = FifoFeeder(tmp_path, "train", [recordio_bytes(x0), recordio_bytes(x1)])
    assert np.array_equal(read_all(spec, 0).features, x0)
    assert np.array_equal(read_all(spec, 1).features, x1)
    feeder.join()


WRITER = """
import sys, time
path, delay = sys.argv[1], float(sys.argv[2])
time.sleep(delay)
import os
if not os.path.exists(path):
    os.mkfifo(path)
data = sys.stdin.buffer.read()
with open(path, "wb") as fifo:
    for i in range(0, len(data), 65536):
        fifo.write(data[i:i + 65536])
"""


def write_from_process(path: Path, data: bytes, delay: float = 0.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(delay)], stdin=subprocess.PIPE)
    proc.stdin.write(data)
    proc.stdin.close()
    return proc


def test_pipe_mode_fifo_created_late_by_another_process_gzip(tmp_path):
    """The platform may create the FIFO after the reader starts waiting; gzip is inflated."""
    spec = pipe_spec(tmp_path)
    x = rows(5000, 0, dim=10)
    proc = write_from_process(tmp_path / "input" / "data" / "train_0", gzip.compress(recordio_bytes(x)), delay=0.5)
    assert np.array_equal(read_all(spec, 0).features, x)
    assert proc.wait(20) == 0


def test_pipe_mode_csv_from_a_process(tmp_path):
    spec = pipe_spec(tmp_path, content_type="text/csv;label_size=1")
    path = tmp_path / "input" / "data" / "train_0"
    os.mkfifo(path)
    lines = "".join(f"{i % 2},{i},{i * 2}\n" for i in range(20000)).encode()
    proc = write_from_process(path, lines)
    batch = read_all(spec, 0)
    assert batch.size == 20000 and np.array_equal(batch.features[:, 0], np.arange(20000))
    assert proc.wait(20) == 0


def test_pipe_fifo_that_never_appears_times_out(tmp_path):
    spec = pipe_spec(tmp_path, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(DataError) as caught:
        read_all(spec, 0)
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 5
    message = str(caught.value)
    assert "train_0 did not appear within 0.5 s" in message and "channel 'train'" in message
    assert "PIPEALGOS_PIPE_TIMEOUT" in message


def test_pipe_fifo_without_writer_times_out(tmp_path):
    spec = pipe_spec(tmp_path, timeout=0.5)
    os.mkfifo(tmp_path / "input" / "data" / "train_0")
    with pytest.raises(DataError, match="no data arrived"):
        read_all(spec, 0)


def test_writer_that_closes_without_data_is_an_empty_epoch(tmp_path):
    spec = pipe_spec(tmp_path)
    FifoFeeder(tmp_path, "train", [b"", recordio_bytes(rows(5))])
    assert list(iter_blocks(spec, 0)) == []
    assert read_all(spec, 1).size == 5


def test_corrupt_pipe_data_names_the_fifo(tmp_path):
    spec = pipe_spec(tmp_path)
    good = recordio_bytes(rows(10))
    FifoFeeder(tmp_path, "train", [good + b"\x00" * 12])
    with pytest.raises(DataError) as caught:
        read_all(spec, 0)
    assert "train_0" in str(caught.value) and "magic" in str(caught.value)


# --- Minibatches, readahead --------------------------------------------------------------------

def test_minibatches_have_the_requested_size_across_files(tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.pbr").write_bytes(recordio_bytes(rows(70, 70 * i), np.full(70, i, np.float32)))
    batches = list(iter_minibatches(ChannelSpec("train", tmp_path), 0, batch_size=32))
    assert [b.size for b in batches] == [32] * 6 + [18]
    assert np.array_equal(np.concatenate([b.features[:, 0] for b in batches]), np.arange(210))
    assert np.array_equal(np.concatenate([b.labels for b in batches]), np.repeat([0, 1, 2], 70))


def test_readahead_delivers_good_batches_then_the_error(tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    (root / "a.pbr").write_bytes(recordio_bytes(rows(100)))
    (root / "b.pbr").write_bytes(recordio_bytes(rows(100))[:-10])
    seen = 0
    with pytest.raises(DataError) as caught:
        for batch in iter_minibatches(ChannelSpec("train", tmp_path), 0, batch_size=10):
            seen += batch.size
    assert seen >= 100
    assert "truncated" in str(caught.value) and str(root / "b.pbr") in str(caught.value)


def test_consumer_stopping_early_releases_the_fifo_and_the_thread(tmp_path):
    """The reader closes the FIFO; the platform's writer sees a broken pipe and moves on."""
    spec = pipe_spec(tmp_path)
    path = tmp_path / "input" / "data" / "train_0"
    os.mkfifo(path)
    data = recordio_bytes(rows(200_000, dim=20))  # ~20 MB: far more than pipe and queue hold
    outcome = {}

    def writer():
        try:
            with open(path, "wb") as fifo:
                fifo.write(data)
            outcome["result"] = "finished"
        except BrokenPipeError:
            outcome["result"] = "broken pipe"

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    batches = iter_minibatches(spec, 0, batch_size=100, readahead=2)
    first = next(batches)
    assert first.size == 100
    batches.close()
    thread.join(10)
    assert outcome.get("result") == "broken pipe"
    assert not batches._thread.is_alive()


def test_pipe_buffer_is_enlarged(tmp_path):
    """open_fifo asks for a 1 MiB pipe buffer (F_SETPIPE_SZ); F_GETPIPE_SZ reads it back."""
    import fcntl

    from pipealgos.io.channel import PIPE_BUFFER, open_fifo

    path = tmp_path / "fifo"
    os.mkfifo(path)
    writer = threading.Thread(target=lambda: Path(path).write_bytes(b"x" * 10), daemon=True)
    writer.start()
    stream = open_fifo(path, 10, "train")
    try:
        size = fcntl.fcntl(stream.fileno(), 1032)  # F_GETPIPE_SZ
        max_size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        assert size == PIPE_BUFFER or max_size < PIPE_BUFFER
        assert stream.read() == b"x" * 10
    finally:
        stream.close()
        writer.join(5)


def test_decoding_a_file_object_is_the_same_as_a_fifo(tmp_path):
    """Pipe content = the channel's objects concatenated byte for byte (spec 1.7)."""
    spec = pipe_spec(tmp_path)
    parts = [recordio_bytes(rows(300, 300 * i)) for i in range(3)]
    FifoFeeder(tmp_path, "train", [b"".join(parts)])
    via_pipe = read_all(spec, 0)
    root = tmp_path / "files" / "train"
    root.mkdir(parents=True)
    for i, part in enumerate(parts):
        (root / f"{i}.pbr").write_bytes(part)
    via_files = read_all(ChannelSpec("train", tmp_path / "files"))
    assert np.array_equal(via_pipe.features, via_files.features)
