"""The Pipe-mode feeder: one thread per (host, channel) writing FIFOs ``<channel>_<epoch>``.

For each epoch the feeder creates the FIFO, waits for the algorithm to open it, and writes
the epoch's objects concatenated in order. Objects are cut into ranges (``chunk_size``)
fetched by a pool of ``workers`` parallel ranged GETs; at most ``memory_cap`` bytes are in
flight or waiting, and they are written strictly in order. A slow range therefore holds up
only the write position, never the fetches behind it, and memory stays flat however big the
channel is. The pipe buffer is widened as the reader's side does it
(:func:`pipealgos.io.channel.widen_pipe_buffer`: 1 MiB when the system allows).

* ``RecordWrapperType: RecordIO``: each object is streamed as one RecordIO record — the frame
  header before its first range and the zero padding after its last, byte-identical to
  :func:`pipealgos.io.recordio.encode_frame` of the whole object.
* ``CompressionType: Gzip``: objects are streamed exactly as stored. The training side
  recognises gzip by its magic bytes and inflates it (multi-member streams included), which is
  what the platform contract recommends since SageMaker does not document who inflates.
* The algorithm closing the FIFO early (EPIPE) ends that epoch cleanly; the feeder then
  offers the next epoch's FIFO, as the Pipe protocol allows another pass.
* A range that still fails after the retries fails the job: ``on_failure`` (the runner kills
  the host) runs *before* the FIFO is closed, so the algorithm never sees a short epoch as EOF.

Epoch 0 starts fetching as soon as the feeder starts (the runner starts feeders when the job
starts, before any ``train`` process), so the download overlaps the hosts' start-up (Python
and torch imports, seconds). Until the algorithm opens the FIFO the fetcher may hold up to
``FeedOptions.startup_buffer`` bytes (a bigger cap than ``memory_cap``, since nothing drains
it yet); once the reader opens it, fetching resumes only below ``memory_cap``, so memory falls
back to the steady cap as the reader catches up. Later epochs start fetching when their FIFO
is opened, so a job that reads one pass never downloads a second.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipealgos.io.channel import widen_pipe_buffer
from pipealgos.io.recordio import HEADER, LENGTH_MASK, MAGIC, padded_length

from .storage import ObjectStore, RetryPolicy, StorageError, StoredObject, read_range_with_retry
from .streammap import StreamMap


class FeedError(RuntimeError):
    """The feeder could not deliver an epoch; the message names the channel and object."""


@dataclass(frozen=True)
class FeedOptions:
    """How one (host, channel) feed fetches: ``workers`` parallel ranged GETs of ``chunk_size``
    bytes, at most ``memory_cap`` bytes fetched ahead of the reader; before the reader opens
    epoch 0's FIFO, at most ``startup_buffer`` bytes (None: ``memory_cap``; see the module
    docstring)."""

    workers: int = 8
    chunk_size: int = 8 << 20
    memory_cap: int = 64 << 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    startup_buffer: int | None = None

    @property
    def startup_cap(self) -> int:
        """Bytes epoch 0 may fetch before its reader arrives: never below ``memory_cap``."""
        return max(self.memory_cap, self.startup_buffer or 0)


@dataclass(frozen=True)
class Piece:
    """A byte range of one object, with framing bytes to write before and after it."""

    obj: StoredObject
    start: int
    end: int
    before: bytes = b""
    after: bytes = b""

    @property
    def length(self) -> int:
        return self.end - self.start


def pieces(objects: Sequence[StoredObject], chunk_size: int, wrap_recordio: bool) -> Iterator[Piece]:
    """The ranges to fetch for ``objects``, in stream order."""
    for obj in objects:
        if wrap_recordio and obj.size > LENGTH_MASK:
            raise FeedError(f"{obj.uri} is {obj.size} bytes: too big for one RecordIO record "
                            f"(limit {LENGTH_MASK}); use RecordWrapperType None for it")
        header = HEADER.pack(MAGIC, obj.size) if wrap_recordio else b""
        padding = b"\x00" * (padded_length(obj.size) - obj.size) if wrap_recordio else b""
        starts = list(range(0, obj.size, chunk_size)) or [0]
        for i, start in enumerate(starts):
            yield Piece(obj, start, min(obj.size, start + chunk_size),
                        header if i == 0 else b"", padding if i == len(starts) - 1 else b"")


class OrderedFetcher:
    """Fetches pieces in parallel, yields (piece, data) in order, ``cap`` bytes ahead at most
    (``options.memory_cap`` unless given; :meth:`settle` lowers a start-up cap to it)."""

    def __init__(self, store: ObjectStore, todo: Iterator[Piece], options: FeedOptions, cap: int | None = None) -> None:
        self._store = store
        self._todo = todo
        self._options = options
        self._cap = options.memory_cap if cap is None else cap
        self._next: Piece | None = next(todo, None)
        self._window: deque[tuple[Piece, Future]] = deque()
        self._held = 0
        self._cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(options.workers, thread_name_prefix="pipe-fetch")
        self._fill()

    def _fetch(self, piece: Piece) -> bytes:
        if piece.length == 0:
            return b""
        return read_range_with_retry(self._store, piece.obj.uri, piece.start, piece.end, self._options.retry,
                                     self._cancelled.is_set)

    def settle(self) -> None:
        """From now on fetch ahead only up to ``memory_cap`` (the reader has arrived)."""
        self._cap = self._options.memory_cap

    def _fill(self) -> None:
        # Bytes are bounded by the cap; the count limit only bounds the futures of short pieces
        # (objects' tails, empty objects), with room for the cap to fill with tails between chunks.
        limit = 4 * self._options.workers + 2 * (self._cap // max(1, self._options.chunk_size))
        while self._next is not None and len(self._window) < limit and (
                not self._window or self._held + self._next.length <= self._cap):
            piece = self._next
            self._window.append((piece, self._pool.submit(self._fetch, piece)))
            self._held += piece.length
            self._next = next(self._todo, None)

    def __iter__(self) -> Iterator[tuple[Piece, bytes]]:
        while self._window:
            piece, future = self._window.popleft()
            data = future.result()
            self._held -= piece.length
            self._fill()
            yield piece, data

    def cancel(self) -> None:
        """Make fetches in progress stop retrying (may be called from another thread)."""
        self._cancelled.set()

    def close(self) -> None:
        self._cancelled.set()
        for _, future in self._window:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class FeedStats:
    """Live counters of one (host, channel) feed, read by the progress display."""

    host: str
    channel: str
    bytes: int = 0
    objects: int = 0
    epochs: int = 0
    started_at: float = field(default_factory=time.monotonic)
    first_byte_at: float | None = None
    last_byte_at: float | None = None
    reader_opened_at: float | None = None
    finished_at: float | None = None


class PipeFeeder(threading.Thread):
    """Feeds ``data_dir/<channel>_<epoch>`` for one host until stopped.

    ``objects_for_epoch(epoch)`` gives the epoch's objects (already sharded and shuffled);
    ``on_failure(message)`` is called from this thread when an epoch cannot be delivered and
    must stop the reader (the runner kills the host) before it returns.
    """

    def __init__(self, host: str, channel: str, data_dir: Path, store: ObjectStore,
                 objects_for_epoch: Callable[[int], Sequence[StoredObject]], wrap_recordio: bool,
                 options: FeedOptions, on_failure: Callable[[str], None]) -> None:
        super().__init__(name=f"feeder-{host}-{channel}", daemon=True)
        self.channel = channel
        self.data_dir = data_dir
        self.store = store
        self.objects_for_epoch = objects_for_epoch
        self.wrap_recordio = wrap_recordio
        self.options = options
        self.on_failure = on_failure
        self.stats = FeedStats(host, channel)
        self.error: str | None = None
        self._stop_event = threading.Event()
        self._active: OrderedFetcher | None = None
        self._maps: dict[int, StreamMap] = {}

    def stream_map(self, epoch: int) -> StreamMap | None:
        """What epoch ``epoch``'s FIFO carried, object by object (the last few epochs are kept)."""
        return self._maps.get(epoch)

    def stop(self) -> None:
        """Stop at the next step; fetches in progress give up instead of retrying."""
        self._stop_event.set()
        active = self._active
        if active is not None:
            active.cancel()

    def run(self) -> None:
        epoch = 0
        while not self._stop_event.is_set() and self._feed_epoch(epoch):
            self.stats.epochs = epoch = epoch + 1
        self.stats.finished_at = time.monotonic()

    def _feed_epoch(self, epoch: int) -> bool:
        """Deliver one epoch; False when the feeder was stopped or failed."""
        path = self.data_dir / f"{self.channel}_{epoch}"
        os.mkfifo(path)
        fetcher = None
        fd = None
        try:
            if epoch == 0:
                fetcher = self._fetcher(epoch, self.options.startup_cap)
            fd = self._open_writer(path)
            if fd is None:
                return False
            if epoch == 0:
                self.stats.reader_opened_at = time.monotonic()
                fetcher.settle()
            if fetcher is None:
                fetcher = self._fetcher(epoch)
            stream = self._new_map(epoch)
            for piece, data in fetcher:
                stream.add(piece.obj.uri, piece.start == 0, len(piece.before) if piece.start == 0 else 0,
                           len(piece.before) + len(data) + len(piece.after), data.count(b"\n"))
                for part in (piece.before, data, piece.after):
                    self._write_all(fd, part)
                if piece.end == piece.obj.size:
                    self.stats.objects += 1
            return True
        except BrokenPipeError:
            return True  # the algorithm stopped reading this pass early: allowed
        except (StorageError, FeedError) as exc:
            if self._stop_event.is_set():
                return False  # the job is over; a fetch cut short by stop() is no failure
            # Stop the reader first: closing the FIFO now would look like a clean, short epoch.
            self.error = f"channel '{self.channel}' on {self.stats.host}, epoch {epoch}: {exc}"
            self.on_failure(self.error)
            return False
        finally:
            if fetcher is not None:
                fetcher.close()
            if fd is not None:
                os.close(fd)
            path.unlink(missing_ok=True)

    def _new_map(self, epoch: int) -> StreamMap:
        """A map for this epoch's FIFO; epochs three behind are dropped (a failing host reads the
        newest one; a long job must not keep a map of every epoch)."""
        self._maps[epoch] = StreamMap()
        self._maps.pop(epoch - 3, None)
        return self._maps[epoch]

    def _fetcher(self, epoch: int, cap: int | None = None) -> OrderedFetcher:
        todo = pieces(self.objects_for_epoch(epoch), self.options.chunk_size, self.wrap_recordio)
        self._active = OrderedFetcher(self.store, todo, self.options, cap)
        return self._active

    def _open_writer(self, path: Path) -> int | None:
        """Open the FIFO for writing once a reader has it open; None if stopped first."""
        waited = 0.0
        while not self._stop_event.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                pause = 0.005 if waited < 2 else 0.05
                time.sleep(pause)
                waited += pause
                continue
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            widen_pipe_buffer(fd)
            return fd
        return None

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if self.stats.first_byte_at is None:
                self.stats.first_byte_at = time.monotonic()
            self.stats.bytes += written
            self.stats.last_byte_at = time.monotonic()
            view = view[written:]
