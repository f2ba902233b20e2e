"""An input object as a stream of byte chunks: ranged GETs (the runner's retries), read one
chunk ahead on a thread of its own, inflated when the input is ``Gzip``.

Memory is bounded by a few chunks whatever the object's size: the read-ahead queue holds at
most ``AHEAD`` chunks, and inflation works chunk by chunk (``max_length`` bounds each piece
of inflated output, so a gzip bomb yields bounded pieces like any other data).
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Iterator

from ..runner.storage import ObjectStore, RetryPolicy, StorageError, StoredObject, read_range_with_retry

AHEAD = 2  # chunks fetched ahead of the one being split
_DONE = object()


class InputError(ValueError):
    """The object cannot be read as declared (bad gzip data); the message names it and the offset."""


def _fetch(store: ObjectStore, obj: StoredObject, chunk_size: int, retry: RetryPolicy, out: queue.Queue,
           cancelled: threading.Event) -> None:
    try:
        for start in range(0, obj.size, chunk_size):
            chunk = read_range_with_retry(store, obj.uri, start, min(obj.size, start + chunk_size), retry,
                                          cancelled.is_set)
            while not cancelled.is_set():
                try:
                    out.put(chunk, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if cancelled.is_set():
                return
        out.put(_DONE)
    except StorageError as exc:
        out.put(exc)


def raw_chunks(store: ObjectStore, obj: StoredObject, chunk_size: int, retry: RetryPolicy) -> Iterator[bytes]:
    """The object's bytes in chunks of ``chunk_size``, the next ones fetched meanwhile."""
    ahead: queue.Queue = queue.Queue(AHEAD)
    cancelled = threading.Event()
    thread = threading.Thread(target=_fetch, args=(store, obj, chunk_size, retry, ahead, cancelled), daemon=True,
                              name="transform-read")
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is _DONE:
                return
            if isinstance(item, StorageError):
                raise item
            yield item
    finally:
        cancelled.set()
        thread.join()


def inflate(chunks: Iterator[bytes], source: str, piece: int) -> Iterator[bytes]:
    """Gzip members (one or several, as ``cat a.gz b.gz`` makes) inflated in pieces of at most ``piece`` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    consumed = 0  # compressed bytes consumed, for error offsets
    in_member = False  # the current member has begun and not ended
    try:
        for chunk in chunks:
            data = chunk
            while data:
                in_member = True
                out = inflater.decompress(data, piece)
                consumed += len(data) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
                if out:
                    yield out
                if inflater.eof:
                    data, in_member = inflater.unused_data, False
                    inflater = zlib.decompressobj(wbits=31)
                else:
                    data = inflater.unconsumed_tail
        if in_member:
            raise InputError(f"{source}: the gzip data ends early (after {consumed} compressed bytes): "
                             "the object is truncated")
    except zlib.error as exc:
        raise InputError(f"{source}: not valid gzip data near compressed byte {consumed} ({exc}); CompressionType "
                         "Gzip needs gzip-compressed objects: remove it for uncompressed input") from None
