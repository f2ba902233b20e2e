"""Splitting an input object into records (``SplitType``) and records into requests (``BatchStrategy``).

* ``SplitType: None``: the whole object is one record (one request), which must fit in
  ``MaxPayloadInMB``.
* ``Line``: a record per line (``\\n``; a ``\\r`` before it stays with the line). Blank lines are
  no records: the server skips them in CSV and JSON Lines bodies, so a request counts the records
  the model answers for. Line numbers (1-based, blank lines counted) name records in errors.
* ``RecordIO``: a record per RecordIO record (a split record's frames stay together), named
  by its index and the byte offset of its first frame.

``SingleRecord`` sends each record alone; ``MultiRecord`` packs as many consecutive records of
one object as fit in ``MaxPayloadInMB`` (MiB, as the server counts it) into one request, which
therefore never splits a record and never spans two objects. A record bigger than the limit
fails the job naming it. Offsets are in the object's (inflated) bytes.

Memory: the bytes of records not yet sent (at most about one payload) plus one chunk.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pipealgos.io.recordio import HEADER, LAST, MAGIC, WHOLE, padded_length

from ..runner.storage import StoredObject
from .reader import InputError

_MAX_BLANK = 8  # a line this short is checked for being blank (longer ones never are, in practice)


@dataclass
class Batch:
    """One request's worth of consecutive records of one object."""

    obj: StoredObject
    payload: bytes
    start: int  # object offset of payload[0]
    bounds: list[tuple[int, int]]  # (start, end) object offsets of each record
    first_record: int  # 0-based index in the object of the first record
    lines: list[int] | None = None  # Line split: each record's 1-based line number
    whole: bool = False  # SplitType None: the record is the object
    last: bool = False  # the object's last batch

    def __len__(self) -> int:
        return len(self.bounds)

    def record(self, i: int) -> bytes:
        start, end = self.bounds[i]
        return self.payload[start - self.start:end - self.start]

    def describe(self, i: int) -> str:
        """Where record ``i`` of this batch is, for an error message."""
        if self.lines is not None:
            return f"line {self.lines[i]}"
        if self.whole:
            return "the whole object (SplitType None)"
        return f"record {self.first_record + i + 1} (1-based), byte offset {self.bounds[i][0]}"


@dataclass
class _Pending:
    """Complete records scanned but not yet sent; offsets are the object's."""

    bounds: list[tuple[int, int]] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # the bounds' ends, for bisect
    lines: list[int] = field(default_factory=list)

    def add(self, start: int, end: int, line: int = 0) -> None:
        self.bounds.append((start, end))
        self.ends.append(end)
        self.lines.append(line)

    def take(self, n: int) -> tuple[list[tuple[int, int]], list[int]]:
        bounds, lines = self.bounds[:n], self.lines[:n]
        del self.bounds[:n], self.ends[:n], self.lines[:n]
        return bounds, lines


class _LineScanner:
    def __init__(self) -> None:
        self.line = 0

    def scan(self, buf: bytearray, base: int, pos: int, final: bool, pending: _Pending) -> int:
        """Add the complete records of ``buf`` from ``pos`` on; return where scanning stopped."""
        find = buf.find
        while True:
            newline = find(b"\n", pos)
            if newline < 0:
                if final and pos < len(buf):
                    self._add(buf, base, pos, len(buf), pending)
                    return len(buf)
                return pos
            self._add(buf, base, pos, newline + 1, pending)
            pos = newline + 1

    def _add(self, buf: bytearray, base: int, start: int, end: int, pending: _Pending) -> None:
        self.line += 1
        if end - start > _MAX_BLANK or buf[start:end].strip():
            pending.add(base + start, base + end, self.line)


class _RecordIOScanner:
    def __init__(self, source: str) -> None:
        self.source = source
        self.record_start: int | None = None  # object offset where an unfinished split record began
        self.records = 0

    def scan(self, buf: bytearray, base: int, pos: int, final: bool, pending: _Pending) -> int:
        unpack, size = HEADER.unpack_from, len(buf)
        while pos + HEADER.size <= size:
            magic, lrec = unpack(buf, pos)
            if magic != MAGIC:
                raise InputError(f"{self.source}: not a RecordIO frame at byte offset {base + pos} (record "
                                 f"{self.records + 1}): expected magic 0x{MAGIC:08X}, found 0x{magic:08X}. "
                                 "SplitType RecordIO needs RecordIO-protobuf objects; use Line for CSV or JSON Lines")
            end = pos + HEADER.size + padded_length(lrec & ((1 << 29) - 1))
            if end > size:
                break
            flag = lrec >> 29
            if self.record_start is None:
                self.record_start = base + pos
            if flag in (WHOLE, LAST):
                pending.add(self.record_start, base + end)
                self.record_start = None
                self.records += 1
            pos = end
        if final and (pos < size or self.record_start is not None):
            raise InputError(f"{self.source}: the object ends inside record {self.records + 1} (byte offset "
                             f"{base + pos}): truncated RecordIO data")
        return pos


class _WholeScanner:
    def __init__(self, source: str, max_bytes: int) -> None:
        self.source, self.max_bytes = source, max_bytes

    def scan(self, buf: bytearray, base: int, pos: int, final: bool, pending: _Pending) -> int:
        if base + len(buf) > self.max_bytes:
            raise InputError(f"{self.source}: the object is more than {self.max_bytes} bytes (MaxPayloadInMB) and "
                             "SplitType None sends it whole: set SplitType to Line or RecordIO, or raise "
                             "MaxPayloadInMB")
        if final:
            pending.add(base, base + len(buf))
            return len(buf)
        return pos


class Splitter:
    """Turns one object's chunks into :class:`Batch` es."""

    def __init__(self, obj: StoredObject, split_type: str, max_bytes: int, multi_record: bool) -> None:
        self.obj = obj
        self.max_bytes = max_bytes
        self.multi_record = multi_record
        self.lines = split_type == "Line"
        self.whole = split_type not in ("Line", "RecordIO")
        if split_type == "Line":
            self.scanner = _LineScanner()
        elif split_type == "RecordIO":
            self.scanner = _RecordIOScanner(obj.uri)
        else:
            self.scanner = _WholeScanner(obj.uri, max_bytes)
        self.records_sent = 0

    def batches(self, chunks: Iterable[bytes]) -> Iterator[Batch]:
        """Every batch of the object, in order; the last one has ``last`` set (an empty object
        gives one empty batch, so that its ``.out`` is written too)."""
        buf, base, scanned, pending = bytearray(), 0, 0, _Pending()
        held: Batch | None = None  # one batch held back, to mark the last one
        for chunk in chunks:
            buf += chunk
            scanned = self.scanner.scan(buf, base, scanned, False, pending)
            for batch in self._cut(buf, base, pending, final=False):
                if held is not None:
                    yield held
                held = batch
            keep_from = min(base + scanned, getattr(self.scanner, "record_start", None) or base + scanned,
                            pending.bounds[0][0] if pending.bounds else base + scanned)
            consumed = keep_from - base
            del buf[:consumed]
            base, scanned = base + consumed, scanned - consumed
        self.scanner.scan(buf, base, scanned, True, pending)
        for batch in self._cut(buf, base, pending, final=True):
            if held is not None:
                yield held
            held = batch
        if held is None:
            held = Batch(self.obj, b"", 0, [], 0, [] if self.lines else None, self.whole)
        held.last = True
        yield held

    def _cut(self, buf: bytearray, base: int, pending: _Pending, final: bool) -> Iterator[Batch]:
        while pending.bounds:
            first = pending.bounds[0][0]
            fits = bisect.bisect_right(pending.ends, first + self.max_bytes)
            if fits == 0:
                size = pending.bounds[0][1] - first
                raise InputError(f"{self.obj.uri}: {self._where(pending)} is {size} bytes, more than "
                                 f"MaxPayloadInMB allows ({self.max_bytes} bytes): raise MaxPayloadInMB")
            count = fits if self.multi_record else 1
            if count == len(pending.bounds) and self.multi_record and not final:
                return  # more records may still fit: wait for the next chunk
            bounds, lines = pending.take(count)
            payload = bytes(buf[first - base:bounds[-1][1] - base])
            yield Batch(self.obj, payload, first, bounds, self.records_sent, lines if self.lines else None, self.whole)
            self.records_sent += count

    def _where(self, pending: _Pending) -> str:
        if self.lines:
            return f"line {pending.lines[0]}"
        return f"record {self.records_sent + 1} (byte offset {pending.bounds[0][0]})"
