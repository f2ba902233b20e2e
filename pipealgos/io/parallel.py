"""RecordIO-protobuf decoded on several threads, in order.

Each decoding thread in turn takes the next chunk of whole records from the stream (read and
cut at frame boundaries where a record starts, under a lock, so the stream is read in order)
and decodes it with a fresh :class:`RecordDecoder`; the consumer takes the blocks in stream
order. A chunk is read and decoded by one thread, so its bytes stay in that core's cache.
Bytes already in memory (a mapped file: :func:`decode_buffer_parallel`) are cut the same way,
without the read. The decoder's dense and sparse fast paths spend their time in numpy and in
the C kernel, which release the GIL, so the threads run at once.

Finding the cuts is a walk over frame headers, in the compiled kernel where it is built
(:func:`record_cut`), so cutting costs little.

The single-threaded decoder stays the reference. A chunk's results are accepted only when
they agree with what came before (all of it consumed, the same feature count, labels on all
records or none); otherwise, or when a chunk fails to decode or its framing is corrupt, the
rest of the stream from that chunk on is decoded by one decoder primed with the state of the
chunks before it. Errors therefore carry the same record index, byte offset and message as
the single-threaded path gives.

The thread count is ``PIPEALGOS_DECODE_THREADS`` (default 1: see
:func:`decode_threads_from_env` for the measured reason).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from .errors import DataError
from .minibatch import Minibatch
from . import sparse_run
from .protobuf import RecordDecoder
from .recordio import FIRST, LENGTH_MASK, MAGIC, WHOLE, padded_length
from .stream import DEFAULT_BUFFER, Replay, aligned_buffer, decode_stream, read_arrived

DECODE_THREADS_ENV = "PIPEALGOS_DECODE_THREADS"
# Bytes read per chunk: 2 MiB took the least CPU per GB (2 threads, dense 50-dim: 23.9 ms per
# 91 MB against 25.4 with 1 MiB and 28.6 with 512 KiB; per-chunk costs), as for one decoder.
DEFAULT_CHUNK = DEFAULT_BUFFER
# Bytes per chunk of a mapped file (no read buffer to fit in cache): 4 MiB, decoded 2 MiB at a
# time, halves the hand-offs; dense 50-dim on 2 threads decoded at 0.77-0.83x `cat` against
# 0.67-0.75x with 2 MiB chunks (same runs); 8 and 16 MiB were slower (more decoded blocks in
# flight than the decoder's reused memory holds).
IN_PLACE_CHUNK = 2 * DEFAULT_BUFFER
DEFAULT_DECODE_THREADS = 1


def decode_threads_from_env() -> int:
    """Threads decoding each RecordIO-protobuf channel: ``PIPEALGOS_DECODE_THREADS``, default 1.

    The default is 1 from the measurements on the 2-core machine (benchmarks/io_decode.py
    ``--threads 1,2``, RESULTS.md, 2026-12-03): one decoder reads dense 50-dim records from a
    cached, mapped file at 0.49-0.68x ``cat``'s rate and from a FIFO at 0.92-1.02x the raw
    FIFO read, two threads at 0.53-0.72x and 0.77-0.96x in the same runs (the FIFO's feeder
    needs the second core), and the algorithm computes on the other core. On a many-core host
    feeding a GPU, set it to the cores the algorithm leaves idle. Anything but an integer >= 1
    is a :class:`DataError` naming the variable."""
    text = os.environ.get(DECODE_THREADS_ENV, "").strip()
    if not text:
        return DEFAULT_DECODE_THREADS
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"{DECODE_THREADS_ENV}={text!r} is not a thread count >= 1",
                        fix=f"Set {DECODE_THREADS_ENV} to a whole number such as 2, or unset it for "
                        f"{DEFAULT_DECODE_THREADS}")
    return int(text)


def record_cut(buf: np.ndarray, end: int) -> tuple[int, bool]:
    """(cut, corrupt) for the frames in ``buf[:end]`` (``buf[0]`` a frame start, 4-aligned).

    ``cut`` is the last offset where a record starts (a whole frame or a split record's first
    piece) such that every frame before it is complete: ``buf[:cut]`` is whole records (the
    last record is left for the next chunk, since whether it is whole is known only there).
    ``corrupt`` says the walk met a header without the RecordIO magic (the decoder reports it).

    The compiled kernel walks the headers where it is built (a frame costs it nanoseconds,
    the Python walk ~1 µs: more than decoding a sparse record takes); otherwise
    :func:`record_cut_python`."""
    if sparse_run.implementation == "c":
        return sparse_run._sparse_kernel.record_cut(buf, end)
    return record_cut_python(buf, end)


def record_cut_python(buf: np.ndarray, end: int) -> tuple[int, bool]:
    """:func:`record_cut` without the compiled kernel, and its definition.

    The walk reads one header per frame, except once: at a whole frame that is not the
    last to fit, it guesses that frames like it fill the buffer and, if the header of the
    last one to fit is the same (magic and length word), goes on from there. For dense
    records that makes cutting one read instead of one per frame (the walk was a tenth of
    the work done under the read lock). A wrong guess is safe: the chunk's decoder checks
    every frame, and a chunk that does not decode to its end exactly is decoded again, with
    the rest of the stream, by the single decoder (:func:`decode_stream_parallel`)."""
    words = buf[: end - end % 4].view("<u4")
    pos = cut = 0
    jumped = False
    while end - pos >= 8:
        if words[pos // 4] != MAGIC:
            return cut, True
        lrec = int(words[pos // 4 + 1])
        flag, stride = lrec >> 29, 8 + padded_length(lrec & LENGTH_MASK)
        if flag in (WHOLE, FIRST):
            cut = pos
        if end - pos < stride:
            break
        last = pos + ((end - pos) // stride - 1) * stride
        if not jumped and flag == WHOLE and last > pos:
            jumped = True
            if words[last // 4] == MAGIC and words[last // 4 + 1] == lrec:
                pos = last
                continue
        pos += stride
    return cut, False


@dataclass
class _Chunk:
    """Whole records ``data`` starting at stream offset ``base``; ``last`` at end of stream."""

    data: np.ndarray
    base: int
    last: bool
    buffer: np.ndarray | None = None  # the read buffer ``data`` lies in, reused once delivered


@dataclass
class _Decoded:
    blocks: list[Minibatch]
    consumed: int
    records: int
    frames: int
    feature_dim: int | None
    has_labels: bool | None
    decoder: RecordDecoder  # its learnt layout starts the decoders of later chunks


@dataclass
class _State:
    """What the chunks accepted so far established."""

    records: int = 0
    frames: int = 0
    feature_dim: int | None = None
    has_labels: bool | None = None

    def accepts(self, done: _Decoded, chunk: _Chunk) -> bool:
        return (done.consumed == len(chunk.data)
                and (self.feature_dim is None or done.feature_dim in (None, self.feature_dim))
                and (self.has_labels is None or done.has_labels in (None, self.has_labels)))

    def add(self, done: _Decoded) -> None:
        self.records += done.records
        self.frames += done.frames
        self.feature_dim = done.feature_dim if done.feature_dim is not None else self.feature_dim
        self.has_labels = done.has_labels if done.has_labels is not None else self.has_labels

    def decoder(self, source: str, feature_dim: int | None) -> RecordDecoder:
        """A decoder that continues the stream after the accepted chunks, as the single
        decoder would be at that point (the counts its errors report, the width, labels)."""
        decoder = RecordDecoder(source, self.feature_dim if self.feature_dim is not None else feature_dim)
        decoder.resume(self.records, self.frames, self.has_labels)
        return decoder


def _decode_chunk(chunk: _Chunk, source: str, feature_dim: int | None,
                  layout_of: RecordDecoder | None, window: int = DEFAULT_BUFFER) -> _Decoded:
    """A fresh decoder's blocks of ``chunk``, handed ``window`` bytes at a time (as
    :func:`~pipealgos.io.stream.decode_buffer` does), so its blocks fit the decoder's reused
    memory however large the chunk."""
    decoder = RecordDecoder(source, feature_dim)
    if layout_of is not None:
        decoder.adopt_layout(layout_of)
    pos, end, blocks = 0, len(chunk.data), []
    while True:
        stop = min(end, pos + window)
        got, new_pos, needed = decoder.decode(chunk.data, pos, stop, chunk.base, chunk.last and stop == end)
        blocks += got
        if new_pos == pos and stop < end:  # a frame longer than the window, or an error held back
            window = max(needed, 2 * window)
            continue
        pos = new_pos
        if stop == end:
            break
    decoder.decode(chunk.data, pos, end, chunk.base, chunk.last)  # raises an error held back for it
    if chunk.last and pos == end:
        decoder.finish(chunk.base + end)
    return _Decoded(blocks, pos, decoder.records, decoder.frames_seen, decoder.feature_dim,
                    decoder.has_labels, decoder)


class _Buffers:
    """Read buffers of one size, handed back once their chunk's blocks were delivered and kept
    for later streams too (at most ``KEEP``): fresh memory for every chunk cost page faults and
    cache misses that made two threads slower than one, and fresh buffers for every stream
    cost ~1 ms per MiB in flight (a channel of many files is many streams)."""

    KEEP = 16
    _free: dict[int, list[np.ndarray]] = {}  # by size, for every stream
    _lock = threading.Lock()

    def __init__(self, size: int) -> None:
        self.size = size

    def get(self, size: int) -> np.ndarray:
        if size <= self.size:
            with self._lock:
                free = self._free.get(self.size)
                if free:
                    return free.pop()
        return aligned_buffer(max(size, self.size))

    def give_back(self, chunk: _Chunk) -> None:
        if chunk.buffer is not None and len(chunk.buffer) == self.size:
            with self._lock:
                free = self._free.setdefault(self.size, [])
                if len(free) < self.KEEP:
                    free.append(chunk.buffer)


def _chunks(stream: BinaryIO, buffers: _Buffers) -> Iterator[_Chunk]:
    """The stream as chunks of whole records (the last one holds whatever remains): each read
    takes what the stream has (:func:`~pipealgos.io.stream.read_arrived`), so a FIFO's chunks
    are what its pipe held."""
    tail = np.empty(0, np.uint8)
    base = 0
    while True:
        buf = buffers.get(2 * len(tail))
        buf[: len(tail)] = tail
        got, at_eof = read_arrived(stream, memoryview(buf)[len(tail):])
        end = len(tail) + got
        cut, corrupt = (end, False) if at_eof else record_cut(buf, end)
        if corrupt:
            cut = end  # one chunk up to here: its decoder reports the corruption
        if cut == 0 and not at_eof:  # no whole record in yet (or one longer than the buffer): read more
            tail = buf[:end]
            continue
        tail = buf[cut:end].copy()
        yield _Chunk(buf[:cut], base, at_eof, buf)
        if at_eof:
            return
        base += cut


def _chunks_in_place(data: np.ndarray, chunk_size: int) -> Iterator[_Chunk]:
    """Bytes in memory as chunks of whole records, views of ``data`` (the last one holds
    whatever remains)."""
    base, size = 0, len(data)
    while True:
        end = min(size, base + chunk_size)
        if end == size:
            yield _Chunk(data[base:], base, True)
            return
        cut, corrupt = record_cut(data[base:end], end - base)
        if corrupt:
            cut = end - base  # one chunk up to here: its decoder reports the corruption
        if cut == 0:  # one record longer than the chunk: look further
            chunk_size *= 2
            continue
        yield _Chunk(data[base:base + cut], base, False)
        base += cut


class _Workers:
    """Threads that each take the next chunk from the stream (one at a time, under a lock) and
    decode it, so a chunk is read and decoded on the same core (handing the bytes to another
    core's cache made a chunk decode ~2x slower), and reading is spread over the threads
    rather than done between the consumer's turns. At most ``window`` chunks are read and
    not yet taken by the consumer.

    The consumer reads and decodes the chunk it waits for itself when no thread has taken it
    yet (it would wait for those bytes anyway), so a slow source costs it no hand-off; it never
    reads a later chunk, which from a FIFO could block it while its chunk is ready. Threads wait
    on ``queue.SimpleQueue`` (in C): a ``threading.Semaphore`` or ``Condition`` runs Python
    code at every hand-off, which cost as much CPU per chunk as decoding it."""

    def __init__(self, chunks: Iterator[_Chunk], source: str, feature_dim: int | None, threads: int,
                 window: int) -> None:
        self.chunks, self.source = chunks, source
        self.feature_dim = feature_dim  # the width established so far (the consumer updates it)
        self.layout_of: RecordDecoder | None = None  # the decoder of the last chunk decoded
        self.read_lock = threading.Lock()
        self.tokens: queue.SimpleQueue[None] = queue.SimpleQueue()  # one per chunk that may be read
        for _ in range(window):
            self.tokens.put(None)
        # (number, chunk, its decoding or None when it failed), or (number, None, the error
        # that ended reading there), in the order they were finished.
        self.finished: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self.results: dict[int, tuple] = {}  # the consumer's: finished before their turn
        self.read_count = 0  # chunks taken from the stream so far (the next one's number)
        self.reading_over = False  # the last chunk was taken, or reading failed
        self.stopped = False
        self.threads = [threading.Thread(target=self._work, name=f"decode-{i}", daemon=True)
                        for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while self._take_and_decode():
            pass

    def _take_and_decode(self, only: int | None = None) -> bool:
        """Read the next chunk (waiting for another thread's read to end) and decode it into
        ``finished``. False when there is nothing left to read, or, for ``only`` (a chunk
        number: the consumer's), when the window is full, another thread is reading (it may
        have taken that chunk and be blocked reading the next: the consumer must not wait for
        that read) or the next chunk is another."""
        try:
            self.tokens.get(block=only is None)
        except queue.Empty:
            return False
        if not self.read_lock.acquire(blocking=only is None):
            self.tokens.put(None)
            return False
        try:
            if self.stopped or self.reading_over or only not in (None, self.read_count):
                self.tokens.put(None)
                return False
            number = self.read_count
            try:
                chunk = next(self.chunks)
            except BaseException as exc:  # the consumer raises it when it reaches this chunk
                self.reading_over = True
                self.finished.put((number, None, exc))
                return True
            self.read_count += 1
            self.reading_over = chunk.last
            layout_of, feature_dim = self.layout_of, self.feature_dim
        finally:
            self.read_lock.release()
        try:
            decoded = _decode_chunk(chunk, self.source, feature_dim, layout_of)
            self.layout_of = decoded.decoder
        except Exception:  # noqa: BLE001 - the single decoder reproduces the error (DataError or not)
            decoded = None
        self.finished.put((number, chunk, decoded))
        return True

    def result(self, number: int) -> tuple[_Chunk, _Decoded | None]:
        """Chunk ``number`` and its decoding (None: it failed); or the error that ended reading
        there, raised. Reads and decodes it here when no thread has taken it yet, else waits
        for it (it is being decoded, or a thread takes it once the window has room)."""
        while number not in self.results:
            if self.finished.empty() and self.read_count == number:
                self._take_and_decode(only=number)
            done, chunk, outcome = self.finished.get()
            self.results[done] = (chunk, outcome)
        chunk, outcome = self.results.pop(number)
        if chunk is None:
            raise outcome
        self.tokens.put(None)
        return chunk, outcome

    def stop(self, wait: bool) -> None:
        """No more chunks are taken; ``wait``: until the threads have finished theirs."""
        self.stopped = True
        for _ in self.threads:
            self.tokens.put(None)
        if wait:
            for thread in self.threads:
                thread.join()

    def later_chunks(self, after: int) -> list[_Chunk]:
        """The chunks read after chunk ``after``, in stream order (call after ``stop(wait=True)``)."""
        while not self.finished.empty():
            done, chunk, outcome = self.finished.get()
            self.results[done] = (chunk, outcome)
        return [self.results[n][0] for n in range(after + 1, self.read_count)]


def decode_stream_parallel(stream: BinaryIO, source: str, feature_dim: int | None, threads: int,
                           chunk_size: int = DEFAULT_CHUNK) -> Iterator[Minibatch]:
    """The blocks of a RecordIO-protobuf ``stream``, decoded on ``threads`` threads, in order."""
    buffers = _Buffers(chunk_size)
    return _decode_chunks(_chunks(stream, buffers), buffers, source, feature_dim, threads)


def decode_buffer_parallel(data, source: str, feature_dim: int | None, threads: int,
                           chunk_size: int = IN_PLACE_CHUNK) -> Iterator[Minibatch]:
    """The blocks of RecordIO-protobuf bytes in memory (a mapped file: see
    :func:`~pipealgos.io.stream.map_file`), decoded in place on ``threads`` threads, in order."""
    chunks = _chunks_in_place(np.frombuffer(data, dtype=np.uint8), chunk_size)
    return _decode_chunks(chunks, None, source, feature_dim, threads)


def _decode_chunks(chunks: Iterator[_Chunk], buffers: _Buffers | None, source: str, feature_dim: int | None,
                   threads: int) -> Iterator[Minibatch]:
    """The blocks of ``chunks`` (whose read buffers, if any, go back to ``buffers``), decoded on
    ``threads`` threads, in order; from the first chunk that does not decode or fit on, the
    single decoder takes over (see the module docstring)."""
    state = _State()
    workers = _Workers(chunks, source, feature_dim, threads, window=2 * threads)
    number = 0
    try:
        while True:
            chunk, done = workers.result(number)
            if done is None or not state.accepts(done, chunk):
                break
            state.add(done)
            if state.feature_dim is not None:
                workers.feature_dim = state.feature_dim
            yield from done.blocks
            if buffers is not None:
                buffers.give_back(chunk)  # blocks are copies: the decoder keeps no view of its input
            if chunk.last:
                return
            number += 1
        # The reference path from the chunk that did not fit on: it reproduces the exact error.
        workers.stop(wait=True)
        later = workers.later_chunks(number)
    finally:
        workers.stop(wait=False)  # a thread blocked reading a FIFO ends when its read returns
    rest = b"".join(bytes(c.data) for c in (chunk, *later))
    if any(c.last for c in (chunk, *later)):
        rest_stream: BinaryIO = Replay(rest, _Empty())
    else:
        rest_stream = Replay(rest, _ChunksTail(chunks))
    yield from decode_stream(rest_stream, state.decoder(source, feature_dim), base=chunk.base)


class _Empty(BinaryIO):
    def readinto(self, view) -> int:
        return 0


class _ChunksTail(BinaryIO):
    """The bytes of the chunks not yet cut (their reader's tail and the stream after it)."""

    def __init__(self, chunks: Iterator[_Chunk]) -> None:
        self.chunks = chunks
        self.head = memoryview(b"")

    def readinto(self, view) -> int:
        while not self.head:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.head = memoryview(bytes(chunk.data))
        n = min(len(view), len(self.head))
        view[:n] = self.head[:n]
        self.head = self.head[n:]
        return n
