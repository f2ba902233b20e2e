"""RecordIO framing (MXNet / dmlc-core), as SageMaker uses it for ``x-recordio-protobuf``.

A frame is ``uint32 magic | uint32 lrec | payload | 0-3 zero pad bytes`` (little-endian).
``lrec`` holds the payload length in bits 0-28 and a continuation flag in bits 29-31:
0 whole record, 1 first piece, 2 middle piece, 3 last piece.

Two conventions exist for joining the pieces of a split record:

* dmlc-core splits a record only where the magic occurs at a 4-aligned offset of its
  payload, drops those 4 bytes, and its reader re-inserts them between the pieces;
* ml-io (the reader AWS wrote for Pipe mode) splits anywhere and joins the pieces as they are.

:func:`join_split_record` decides per record. The dmlc join is possible only when every
piece but the last has a length divisible by 4 (a dmlc split always produces that; an
arbitrary split rarely does). Each possible join is scored by the caller's judge (for
protobuf: 0 = not a Record, 1 = a plausible Record, 2 = a plausible Record that re-serialises
to the same bytes with Record's own fields, as every writer's output does); the best score
wins, and a tie goes to the dmlc join, since dmlc-core's writer is the one that really splits
records. A wrong join can still parse (protobuf is forgiving), which is why plausibility and
the round trip are judged rather than parsing alone.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .errors import DataError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
HEADER = struct.Struct("<II")
LENGTH_MASK = (1 << 29) - 1

WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3
_FLAG_NAMES = {WHOLE: "whole", FIRST: "first part", MIDDLE: "middle part", LAST: "last part"}


def padded_length(length: int) -> int:
    """Payload length rounded up to the 4-byte frame alignment."""
    return (length + 3) & ~3


def encode_frame(payload: bytes, flag: int = WHOLE) -> bytes:
    """One frame holding ``payload`` with continuation flag ``flag``."""
    if len(payload) > LENGTH_MASK:
        raise ValueError(f"record of {len(payload)} bytes exceeds the RecordIO limit of {LENGTH_MASK}")
    pad = padded_length(len(payload)) - len(payload)
    return HEADER.pack(MAGIC, (flag << 29) | len(payload)) + payload + b"\x00" * pad


def split_frames_dmlc(payload: bytes) -> bytes:
    """Frame ``payload`` the way dmlc-core's writer does: split where the magic sits 4-aligned.

    Used to build test inputs and by anyone needing dmlc-compatible output.
    """
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == MAGIC_BYTES]
    if not cuts:
        return encode_frame(payload)
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(payload[start:cut])
        start = cut + 4
    pieces.append(payload[start:])
    frames = []
    for i, piece in enumerate(pieces):
        flag = FIRST if i == 0 else LAST if i == len(pieces) - 1 else MIDDLE
        frames.append(encode_frame(piece, flag))
    return b"".join(frames)


def join_split_record(pieces: list[bytes], judge: Callable[[bytes], int] | None) -> bytes | None:
    """Join the pieces of one split record; None when no join gives a valid record.

    ``judge`` scores a candidate payload (0 = invalid; higher is better); without one the
    pieces are joined plainly."""
    plain = b"".join(pieces)
    if judge is None:
        return plain
    candidates = [plain]
    if all(len(p) % 4 == 0 for p in pieces[:-1]):
        candidates.insert(0, MAGIC_BYTES.join(pieces))  # first: wins ties
    best, best_score = None, 0
    for candidate in candidates:
        score = int(judge(candidate))
        if score > best_score:
            best, best_score = candidate, score
    return best


class FrameParser:
    """Turns frames at given positions of a buffer into whole record payloads.

    Keeps the pieces of a split record across calls, so a caller can feed it consecutive
    frames of a stream. ``source`` names the stream in errors; offsets in errors are
    absolute stream offsets.
    """

    def __init__(self, source: str, judge: Callable[[bytes], int] | None = None) -> None:
        self.source = source
        self.judge = judge
        self.frames_seen = 0
        self.records_done = 0
        self._pieces: list[bytes] = []
        self._split_start = 0

    @property
    def in_split(self) -> bool:
        return bool(self._pieces)

    def header_at(self, buf, pos: int, stream_offset: int) -> tuple[int, int]:
        """Return (payload length, flag) of the frame header at ``buf[pos:pos+8]``."""
        magic, lrec = HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise DataError(
                f"not a RecordIO frame: expected magic 0x{MAGIC:08X}, found 0x{magic:08X}",
                source=self.source,
                offset=stream_offset + pos,
                record=self.records_done,
                fix="Check the channel's ContentType; RecordIO-protobuf data must be written with "
                "a RecordIO writer such as `pipealgos convert` or the SDK's write_numpy_to_dense_tensor",
            )
        return lrec & LENGTH_MASK, lrec >> 29

    def frame(self, payload: bytes, flag: int, frame_offset: int) -> bytes | None:
        """Consume one frame; returns a whole record payload when one is complete."""
        self.frames_seen += 1
        if flag == WHOLE:
            if self._pieces:
                self._corrupt(frame_offset, flag)
            self.records_done += 1
            return payload
        if flag == FIRST:
            if self._pieces:
                self._corrupt(frame_offset, flag)
            self._pieces = [payload]
            self._split_start = frame_offset
            return None
        if flag in (MIDDLE, LAST):
            if not self._pieces:
                self._corrupt(frame_offset, flag)
            self._pieces.append(payload)
            if flag == MIDDLE:
                return None
            pieces, self._pieces = self._pieces, []
            joined = join_split_record(pieces, self.judge)
            if joined is None:
                raise DataError(
                    f"split record of {len(pieces)} frames does not form a valid record under "
                    "either join convention (plain or dmlc)",
                    source=self.source,
                    offset=self._split_start,
                    record=self.records_done,
                )
            self.records_done += 1
            return joined
        raise DataError(
            f"frame #{self.frames_seen} has unknown continuation flag {flag}",
            source=self.source,
            offset=frame_offset,
            record=self.records_done,
        )

    def _corrupt(self, frame_offset: int, flag: int) -> None:
        expected = "a middle or last part" if self._pieces else "a whole record or a first part"
        raise DataError(
            f"corrupt split record: frame #{self.frames_seen} is a {_FLAG_NAMES[flag]} where "
            f"{expected} was expected",
            source=self.source,
            offset=frame_offset,
            record=self.records_done,
        )

    def finish(self, stream_offset: int) -> None:
        """Call at end of stream: an open split record is truncation."""
        if self._pieces:
            raise DataError(
                f"stream ends inside a split record ({len(self._pieces)} pieces read, no last part)",
                source=self.source,
                offset=stream_offset,
                record=self.records_done,
            )


def iter_records(stream: BinaryIO, source: str = "<stream>", judge=None) -> Iterator[bytes]:
    """Yield whole record payloads from a binary stream (the simple, per-frame reader).

    The bulk decoder in :mod:`pipealgos.io.protobuf` is the fast path; this one serves tools,
    tests and non-protobuf RecordIO.
    """
    parser = FrameParser(source, judge)
    offset = 0
    while True:
        header = stream.read(HEADER.size)
        if not header:
            parser.finish(offset)
            return
        if len(header) < HEADER.size:
            raise DataError(
                f"truncated frame header: {len(header)} of 8 bytes before end of data",
                source=source,
                offset=offset,
                record=parser.records_done,
            )
        length, flag = parser.header_at(header, 0, offset)
        body = stream.read(padded_length(length))
        if len(body) < length:
            raise DataError(
                f"truncated record: header announces {length} payload bytes, only {len(body)} remain",
                source=source,
                offset=offset,
                record=parser.records_done,
            )
        record = parser.frame(body[:length], flag, offset)
        offset += HEADER.size + padded_length(length)
        if record is not None:
            yield record
