"""Which object each byte and line of a Pipe-mode FIFO came from, so that a host's error can
name the object instead of the FIFO.

``train`` only sees ``input/data/train_0`` and reports places in it (``train_0, record 602,
byte offset 28896`` for RecordIO-protobuf, ``train_0: line 151`` for CSV). The feeder knows
what it wrote: each FIFO's :class:`StreamMap` records, object by object, the byte range and
the lines it took in the stream. :func:`name_objects` then adds to a failure reason the object
key and the place within that object::

    .../input/data/train_0 (s3://bucket/data/part-2.pbr, byte offset 100 of that object), record 602, ...

With ``RecordWrapperType: RecordIO`` the offsets within an object leave out its record header.
``CompressionType: Gzip`` channels are left as they are: the host counts inflated bytes and
lines, and the feeder streams the objects compressed, so their ranges do not line up (the
runner would have to inflate every object a second time to map them).
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

# A FIFO path in an error text, then the first place given after it.
FIFO_PATH = re.compile(r"\S*/input/data/(?P<channel>[A-Za-z0-9.\-_]+)_(?P<epoch>\d+)\b")
PLACE = re.compile(r"\b(?:byte offset (?P<offset>\d+)|line (?P<line>\d+))\b")


@dataclass(frozen=True)
class StreamedObject:
    """One object's part of a FIFO: bytes ``[start, end)`` (framing included), and its lines
    from ``first_line`` (1-based, counting the FIFO's lines) on."""

    uri: str
    start: int
    end: int
    framing: int  # bytes written before the object's own first byte (its RecordIO header)
    first_line: int
    newlines: int


class StreamMap:
    """The objects of one FIFO (one epoch of one host and channel), in the order written.
    The feeder thread adds; the runner's thread looks up (a lock keeps the lists in step)."""

    def __init__(self) -> None:
        self.objects: list[StreamedObject] = []
        self._starts: list[int] = []
        self._lines: list[int] = []
        self._lock = threading.Lock()
        self._offset = 0
        self._line = 1

    def add(self, uri: str, first_piece: bool, framing: int, length: int, newlines: int) -> None:
        """Record ``length`` bytes (holding ``newlines`` newlines) written for object ``uri``."""
        with self._lock:
            if first_piece or not self.objects:
                self.objects.append(StreamedObject(uri, self._offset, self._offset, framing, self._line, 0))
                self._starts.append(self._offset)
                self._lines.append(self._line)
            last = self.objects[-1]
            self.objects[-1] = StreamedObject(uri, last.start, last.end + length, last.framing, last.first_line,
                                              last.newlines + newlines)
            self._offset += length
            self._line += newlines

    def at_offset(self, offset: int) -> tuple[StreamedObject, int] | None:
        """The object holding byte ``offset`` of the FIFO, and the offset within the object."""
        with self._lock:
            i = bisect.bisect_right(self._starts, offset) - 1
            if i < 0 or offset >= self.objects[i].end:
                return None
            obj = self.objects[i]
        return obj, max(0, offset - obj.start - obj.framing)

    def at_line(self, line: int) -> tuple[StreamedObject, int] | None:
        """The object holding the FIFO's (1-based) ``line``, and the line within the object."""
        with self._lock:
            i = bisect.bisect_right(self._lines, line) - 1
            if i < 0 or line > self.objects[i].first_line + self.objects[i].newlines:
                return None
            obj = self.objects[i]
        return obj, line - obj.first_line + 1


def name_objects(reason: str, stream_map: Callable[[str, int], StreamMap | None]) -> str:
    """``reason`` with the object (and the place within it) added after the first FIFO path
    it names; unchanged when it names none or the place is not in the map.

    ``stream_map(channel, epoch)`` gives the FIFO's map, or None (unknown, or a Gzip channel)."""
    fifo = FIFO_PATH.search(reason)
    if fifo is None:
        return reason
    found = stream_map(fifo["channel"], int(fifo["epoch"]))
    place = PLACE.search(reason, fifo.end())
    if found is None or place is None:
        return reason
    if place["offset"] is not None:
        unit, hit = "byte offset", found.at_offset(int(place["offset"]))
    else:
        unit, hit = "line", found.at_line(int(place["line"]))
    if hit is None:
        return reason
    obj, within = hit
    return f"{reason[:fifo.end()]} ({obj.uri}, {unit} {within} of that object){reason[fifo.end():]}"
