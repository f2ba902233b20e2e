"""The Pipe-mode feeder on real FIFOs: content, order, RecordIO wrapping, memory cap, the
start-up buffer, early close, and failure before EOF."""

import os
import threading
import time
from pathlib import Path

import pytest

from jobkit import pca_request
from pipealgos.io.recordio import encode_frame
from pipealgos.platform.runner.feeder import FeedOptions, PipeFeeder
from pipealgos.platform.runner.job import parse_job
from pipealgos.platform.runner.runner import JobRun, RunOptions
from pipealgos.platform.runner.storage import LocalStore, RetryPolicy, StorageError, StoredObject


def make_objects(folder: Path, sizes: list[int]) -> list[StoredObject]:
    folder.mkdir(parents=True, exist_ok=True)
    objects = []
    for i, size in enumerate(sizes):
        path = folder / f"obj-{i:03d}"
        path.write_bytes(os.urandom(size))
        objects.append(StoredObject(str(path), size, path.name))
    return objects


def read_fifo(path: Path, limit: int | None = None, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    chunks, total = [], 0
    with open(path, "rb", buffering=0) as fifo:
        while limit is None or total < limit:
            data = fifo.read(65536 if limit is None else min(65536, limit - total))
            if not data:
                break
            chunks.append(data)
            total += len(data)
    return b"".join(chunks)


class ProbedStore(LocalStore):
    """A local store that records how many bytes were being fetched at once, and can fail."""

    def __init__(self, fail_uri: str | None = None, delay: float = 0.0) -> None:
        self.fail_uri = fail_uri
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()

    def read_range(self, uri, start, end):
        with self.lock:
            self.in_flight += end - start
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.delay)
            if uri == self.fail_uri:
                raise StorageError(f"{uri}: connection refused")
            return super().read_range(uri, start, end)
        finally:
            with self.lock:
                self.in_flight -= end - start


def start_feeder(tmp_path, objects, store=None, wrap=False, options=None, on_failure=None, shuffle=None):
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    failures = []

    def failed(message):
        failures.append(message)
        if on_failure:
            on_failure(message)

    feeder = PipeFeeder("algo-1", "train", data_dir, store or LocalStore(),
                        shuffle or (lambda epoch: objects), wrap, options or FeedOptions(), failed)
    feeder.start()
    return feeder, data_dir, failures


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_epochs_carry_the_objects_concatenated_in_order(tmp_path, chunk):
    objects = make_objects(tmp_path / "src", [0, 1, 4099, 20000, 3])
    expected = b"".join(Path(o.uri).read_bytes() for o in objects)
    feeder, data_dir, failures = start_feeder(tmp_path, objects, options=FeedOptions(workers=4, chunk_size=chunk,
                                                                                     memory_cap=3 * chunk))
    try:
        assert read_fifo(data_dir / "train_0") == expected
        assert read_fifo(data_dir / "train_1") == expected  # the next pass is offered as asked for
    finally:
        feeder.stop()
        feeder.join(5)
    assert not failures and feeder.stats.objects == 10 and feeder.stats.epochs >= 2


def test_shuffled_epochs_follow_the_given_order(tmp_path):
    objects = make_objects(tmp_path / "src", [10, 20, 30])
    feeder, data_dir, _ = start_feeder(tmp_path, objects, shuffle=lambda epoch: objects[::-1] if epoch else objects)
    try:
        assert read_fifo(data_dir / "train_0") == b"".join(Path(o.uri).read_bytes() for o in objects)
        assert read_fifo(data_dir / "train_1") == b"".join(Path(o.uri).read_bytes() for o in objects[::-1])
    finally:
        feeder.stop()
        feeder.join(5)


def test_recordio_wrapping_is_encode_frame_of_each_object(tmp_path):
    objects = make_objects(tmp_path / "src", [0, 5, 8, 30001])
    expected = b"".join(encode_frame(Path(o.uri).read_bytes()) for o in objects)
    feeder, data_dir, _ = start_feeder(tmp_path, objects, wrap=True, options=FeedOptions(chunk_size=4096))
    try:
        assert read_fifo(data_dir / "train_0") == expected
    finally:
        feeder.stop()
        feeder.join(5)


def test_memory_stays_under_the_cap_however_big_the_channel(tmp_path):
    objects = make_objects(tmp_path / "src", [50_000] * 20)
    store = ProbedStore(delay=0.002)
    options = FeedOptions(workers=8, chunk_size=4096, memory_cap=5 * 4096)
    feeder, data_dir, _ = start_feeder(tmp_path, objects, store=store, options=options)
    try:
        assert len(read_fifo(data_dir / "train_0")) == 1_000_000
    finally:
        feeder.stop()
        feeder.join(5)
    assert 4096 < store.peak <= options.memory_cap


def test_reader_closing_early_ends_the_epoch_cleanly(tmp_path):
    objects = make_objects(tmp_path / "src", [3 << 20] * 4)  # far more than the 1 MiB pipe buffer
    feeder, data_dir, failures = start_feeder(tmp_path, objects, options=FeedOptions(chunk_size=1 << 20))
    try:
        assert len(read_fifo(data_dir / "train_0", limit=100)) == 100  # then close: EPIPE on the writer
        whole = read_fifo(data_dir / "train_1")
        assert whole == b"".join(Path(o.uri).read_bytes() for o in objects)
    finally:
        feeder.stop()
        feeder.join(5)
    assert not feeder.is_alive() and not failures and feeder.error is None


def test_a_failing_object_is_reported_before_the_fifo_closes(tmp_path):
    """While ``on_failure`` runs (the runner kills the host there) the FIFO must still be open:
    the reader, blocked in read(), gets no EOF however long the handler takes. A feeder that
    closed the FIFO first would hand the reader its EOF during the wait below."""
    objects = make_objects(tmp_path / "src", [1000, 1000, 1000])
    store = ProbedStore(fail_uri=objects[1].uri)
    eof = threading.Event()
    eof_during_failure = []
    result = {}

    def reader():
        result["data"] = read_fifo(data_dir / "train_0")
        eof.set()

    def on_failure(message):
        eof_during_failure.append(eof.wait(0.5))

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    thread = threading.Thread(target=reader)
    thread.start()
    feeder, _, failures = start_feeder(tmp_path, objects, store=store, on_failure=on_failure,
                                       options=FeedOptions(retry=RetryPolicy(attempts=3, backoff=0.01)))
    feeder.join(10)
    thread.join(10)
    assert eof_during_failure == [False]
    assert eof.is_set(), "the FIFO is closed once the failure is handled"
    assert len(failures) == 1 and objects[1].uri in failures[0] and "after 3 attempts" in failures[0]
    assert "channel 'train' on algo-1, epoch 0" in failures[0]
    assert result["data"] == Path(objects[0].uri).read_bytes()
    assert not feeder.is_alive() and not (data_dir / "train_1").exists()


class CountingStore(LocalStore):
    """A local store that counts the bytes it has returned."""

    def __init__(self) -> None:
        self.fetched = 0
        self.lock = threading.Lock()

    def read_range(self, uri, start, end):
        data = super().read_range(uri, start, end)
        with self.lock:
            self.fetched += len(data)
        return data


def wait_until_steady(read, timeout: float = 10.0, quiet: float = 0.3) -> int:
    """``read()`` once it has not changed for ``quiet`` seconds (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return value
    raise AssertionError(f"still changing after {timeout} s (last {value})")


def test_epoch_0_fills_the_startup_buffer_before_the_reader_arrives(tmp_path):
    """Fetching starts with the feeder, up to ``startup_buffer`` (not the smaller steady
    ``memory_cap``) while no reader has opened the FIFO, and the stream is still whole."""
    chunk = 4096
    objects = make_objects(tmp_path / "src", [50_000] * 20)
    store = CountingStore()
    options = FeedOptions(workers=4, chunk_size=chunk, memory_cap=4 * chunk, startup_buffer=40 * chunk)
    feeder, data_dir, failures = start_feeder(tmp_path, objects, store=store, options=options)
    try:
        held = wait_until_steady(lambda: store.fetched)
        assert options.startup_buffer - chunk <= held <= options.startup_buffer
        assert feeder.stats.bytes == 0  # nothing written: no reader yet
        assert read_fifo(data_dir / "train_0") == b"".join(Path(o.uri).read_bytes() for o in objects)
    finally:
        feeder.stop()
        feeder.join(5)
    assert not failures


def test_without_a_startup_buffer_epoch_0_prefetches_only_the_memory_cap(tmp_path):
    chunk = 4096
    objects = make_objects(tmp_path / "src", [50_000] * 4)
    store = CountingStore()
    options = FeedOptions(workers=4, chunk_size=chunk, memory_cap=4 * chunk)
    feeder, data_dir, _ = start_feeder(tmp_path, objects, store=store, options=options)
    try:
        assert 0 < wait_until_steady(lambda: store.fetched) <= options.memory_cap
    finally:
        feeder.stop()
        feeder.join(5)


def test_the_jobs_startup_buffer_is_shared_by_its_feeders():
    job = parse_job(pca_request("share", "/nowhere/", "/nowhere-out/", mode="Pipe", hosts=4))
    feed = FeedOptions(memory_cap=1 << 20)
    assert JobRun(job, RunOptions(feed=feed, startup_buffer=64 << 20))._feed_options().startup_cap == 16 << 20
    # A share below the steady cap is raised to it: a feeder never holds less than memory_cap.
    assert JobRun(job, RunOptions(feed=feed, startup_buffer=1 << 20))._feed_options().startup_cap == 1 << 20
