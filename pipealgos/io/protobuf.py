"""RecordIO-protobuf bytes -> blocks of rows (dense numpy or scipy CSR) and labels.

Two paths return identical arrays:

* the **fast path** takes runs of dense records whose bytes share one layout (same feature
  count, same tensor type, label or not, no per-record strings): the first record's layout
  becomes a template, and every following frame in the buffer is checked against the
  template's constant bytes and its values copied out. No Python work per record. Where the
  compiled kernel is built (``sparse_run.implementation == "c"``) its ``dense_gather`` does
  this in one pass over the frames, checking each row's values for NaN/infinity as it copies
  them (~2.5x the numpy implementation's rate, the GIL released); otherwise numpy checks all
  frames with one vectorized compare, cuts the values out with one strided copy and checks
  finiteness in a third pass.
* the **sparse fast path** (:mod:`.sparse_run`) takes runs of sparse records laid out as
  the SDK writes them and parses the fixed sequence of their protobuf fields for all records
  of the buffer at once, building the CSR arrays directly.
* the **general path** parses each record with the upb protobuf runtime and handles
  everything else: int32 tensors, split frames, per-record uids, unusual field orders.

A run on a fast path ends at the first frame that differs from the template (or the sparse
layout); that frame goes through the general path, which then offers the fast path a new
template. Attempts that keep yielding short runs back off (see ``_Backoff``) so that a stream
of irregular records costs little more than the general path alone.
"""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from . import record_pb2
from .errors import DataError
from .minibatch import MAX_FEATURE_DIM, Minibatch, first_nonfinite_row, rows_to_csr, sorted_csr
from .recordio import HEADER, FrameParser, padded_length
from . import sparse_run
from .sparse_run import decode_sparse_run
from .wire import TensorSlot, dense_record_slots

_TENSOR_KINDS = ("float32_tensor", "float64_tensor", "int32_tensor")
_NONFINITE_FIX = ("Remove or impute non-finite values before training; values are read as float32, "
                  "so float64 values beyond +-3.4e38 become infinite too")


def parse_record(payload: bytes) -> record_pb2.Record:
    record = record_pb2.Record()
    record.ParseFromString(payload)
    return record


def _is_record(payload: bytes) -> int:
    """How plausible ``payload`` is as a Record (see :func:`_judge_record`)."""
    return _judge_record(payload)[0]


def _judge_record(payload: bytes) -> tuple[int, bool]:
    """How plausible ``payload`` is as a Record (the judge of split-record joins), and whether
    it carries a label: 0 = it does not parse, has no features, or has a map key that is not a
    printable name or a value without a tensor; 1 = plausible; 2 = plausible and it
    re-serialises to exactly these bytes with only the fields Record defines. A wrong join of
    a split record can still parse, typically with a stray run of bytes as a map key, with
    fields that serialise differently, or with trailing bytes that parse as a field Record
    does not have (such a join turned a float64 into -6.5e71 where the other join was right)."""
    try:
        record = parse_record(payload)
    except DecodeError:
        return 0, False
    if not record.features:
        return 0, False
    try:
        for entries in (record.features, record.label):
            for key, value in entries.items():
                if not key or not key.isprintable() or value.WhichOneof("value") is None:
                    return 0, False
    except UnicodeDecodeError:  # a key that is not even UTF-8
        return 0, False
    record.DiscardUnknownFields()
    return (2 if record.SerializeToString() == payload else 1), bool(record.label)


class _WarmArrays:
    """float32 arrays for the dense kernel's blocks, on memory that stays mapped.

    A large block is a view of a slab kept here; once every view of it is gone (the consumer
    dropped the block and what it sliced from it) the slab holds the next block. Fresh memory
    per block cost a page fault per 4 KiB written, ~15% of the time on two decoding threads
    (glibc hands memory freed in a thread's arena back to the kernel). One instance serves
    every decoder of the process (a channel of many files is many streams, each with its own
    decoders), so it is thread-safe; it keeps at most ``KEEP`` slabs of at most ``LARGEST``
    bytes each."""

    SMALLEST = 256 << 10  # bytes; below this malloc keeps memory mapped anyway
    LARGEST = 4 << 20  # bytes; a block from a read buffer (2 MiB) fits
    KEEP = 16  # slabs kept at most (a consumer holding blocks must not pin more)

    def __init__(self) -> None:
        self._slabs: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, rows: int, columns: int) -> np.ndarray:
        nbytes = rows * columns * 4
        if not self.SMALLEST <= nbytes <= self.LARGEST:
            return np.empty((rows, columns), dtype=np.float32)
        with self._lock:
            slab = self._free_slab(nbytes)
            if slab is None:
                # Rounded up, so blocks a few rows longer fit too; a consumer keeping every
                # block pays at most SMALLEST bytes each for that.
                slab = np.empty(-(-nbytes // self.SMALLEST) * self.SMALLEST, dtype=np.uint8)
                if len(self._slabs) < self.KEEP:
                    self._slabs.append(slab)
        return slab[:nbytes].view(np.float32).reshape(rows, columns)

    def _free_slab(self, nbytes: int) -> np.ndarray | None:
        for slab in self._slabs:
            # References: the list, this loop's variable, getrefcount's argument. A block's
            # array (and every view of it) refers to the slab as its base.
            if len(slab) >= nbytes and sys.getrefcount(slab) == 3:
                return slab
        return None


_WARM_ARRAYS = _WarmArrays()


@dataclass
class _Template:
    """A dense record layout: frames matching it decode by slicing."""

    stride: int  # frame length in bytes, header and padding included
    header: bytes
    word_cols: np.ndarray  # indices (uint32) of the frame's words holding constant bytes
    word_mask: np.ndarray  # which bytes of those words are constant
    word_want: np.ndarray  # their expected values (masked)
    features: TensorSlot  # offsets relative to the frame start
    label: TensorSlot | None

    @classmethod
    def from_frame(cls, frame: bytes, slots: tuple[TensorSlot, TensorSlot | None]) -> "_Template":
        features, label = (
            None if s is None else TensorSlot(s.offset + HEADER.size, s.count, s.dtype) for s in slots
        )
        stride = len(frame)
        variable = np.zeros(stride, dtype=bool)
        for slot in (features, label):
            if slot is not None:
                variable[slot.offset : slot.offset + slot.count * slot.dtype.itemsize] = True
        const_bytes = np.where(variable, 0, 0xFF).astype(np.uint8)
        mask_words = const_bytes.view("<u4")
        cols = np.flatnonzero(mask_words).astype(np.uint32)
        frame_words = np.frombuffer(frame, dtype="<u4")
        return cls(
            stride=stride,
            header=frame[: HEADER.size],
            word_cols=cols,
            word_mask=mask_words[cols],
            word_want=frame_words[cols] & mask_words[cols],
            features=features,
            label=label,
        )

    def take(self, buf: np.ndarray, pos: int, count: int) -> tuple[Minibatch | None, tuple[int | None, int | None] | None]:
        """The block of the leading frames of ``buf[pos:]`` (at most ``count``) that match,
        None when the first does not, and the first rows of it holding NaN or infinity in
        (features, labels) when the kernel found them while copying (None: not checked)."""
        if sparse_run.implementation == "c":
            return self._take_compiled(buf, pos, count)
        frames = buf[pos : pos + count * self.stride].reshape(count, self.stride)
        n = self.matching_rows(frames.view("<u4"))
        if not n:
            return None, None
        features, labels = self.cut(frames[:n])
        return Minibatch(features, labels), None

    def _take_compiled(self, buf: np.ndarray, pos: int, count: int):
        """:meth:`take` by the kernel's ``dense_gather``, which also reports non-finite rows."""
        features = _WARM_ARRAYS.empty(count, self.features.count)
        labels = None if self.label is None else np.empty(count, dtype=np.float32)
        label_at, label_size = (-1, 0) if self.label is None else (self.label.offset, self.label.dtype.itemsize)
        n, feature_row, label_row = sparse_run._sparse_kernel.dense_gather(
            buf, pos, self.stride, self.word_cols, self.word_mask, self.word_want,
            self.features.offset, self.features.dtype.itemsize, label_at, label_size, features, labels)
        if not n:
            return None, None
        if n < count:  # the layout changed: keep no unused rows alive with the block
            features = features[:n].copy()
            labels = None if labels is None else labels[:n].copy()
        return Minibatch(features, labels), (None if feature_row < 0 else feature_row,
                                             None if label_row < 0 else label_row)

    def matching_rows(self, rows: np.ndarray) -> int:
        """Number of leading rows (frames, as uint32 words) that match the template."""
        # A few rows first: a template that fails at once must not cost a whole-buffer check.
        head = min(len(rows), 16)
        matched = self._matching(rows[:head])
        if matched < head or head == len(rows):
            return matched
        return head + self._matching(rows[head:])

    def _matching(self, rows: np.ndarray) -> int:
        got = np.take(rows, self.word_cols, axis=1)  # np.take: ~3x faster than fancy indexing here
        got &= self.word_mask
        if not (got != self.word_want).any():  # the common case, checked flat (fast)
            return len(got)
        ok = (got == self.word_want).all(axis=1)
        return int(np.argmin(ok))

    def cut(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Features (n, d) float32 and labels (n,) float32 of matching frames (n, stride) uint8."""
        return self._cut_slot(frames, self.features), (
            None if self.label is None else self._cut_slot(frames, self.label)[:, 0]
        )

    @staticmethod
    def _cut_slot(frames: np.ndarray, slot: TensorSlot) -> np.ndarray:
        size = slot.dtype.itemsize
        if slot.offset % size == 0 and frames.shape[1] % size == 0:
            # Aligned: copy typed elements straight out of the frames (no byte shuffling).
            first = slot.offset // size
            values = frames.view(slot.dtype)[:, first : first + slot.count]
        else:
            width = slot.count * size
            values = np.ascontiguousarray(frames[:, slot.offset : slot.offset + width]).view(slot.dtype)
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused after the cast
            return np.array(values, dtype=np.float32, order="C")


class _Backoff:
    """When to try a fast path again after it yielded little.

    A try that yields fewer than ``PRODUCTIVE`` records doubles the number of records left
    to the general path before the next try (up to ``LIMIT``); a productive try resets it.
    """

    PRODUCTIVE = 32
    LIMIT = 4096

    def __init__(self) -> None:
        self.skip = 0
        self._next_skip = 1

    def ready(self) -> bool:
        return self.skip == 0

    def record_done(self) -> None:
        self.skip = max(0, self.skip - 1)

    def tried(self, records: int) -> None:
        if records >= self.PRODUCTIVE:
            self._next_skip = 1
        else:
            self.skip = self._next_skip
            self._next_skip = min(2 * self._next_skip, self.LIMIT)


class _RowCollector:
    """Rows decoded one by one on the general path, flushed as one block."""

    def __init__(self) -> None:
        self.dense: list[np.ndarray] = []
        self.sparse_keys: list[np.ndarray | None] = []
        self.labels: list[float] = []
        self.any_sparse = False
        self.records_after = 0  # the decoder's record count after the last row added

    def __len__(self) -> int:
        return len(self.dense)

    def add(self, values: np.ndarray, keys: np.ndarray | None, label: float | None, records_after: int) -> None:
        self.records_after = records_after
        self.dense.append(values)
        self.sparse_keys.append(keys)
        self.any_sparse |= keys is not None
        if label is not None:
            self.labels.append(label)

    def flush(self, feature_dim: int) -> Minibatch:
        n = len(self.dense)
        labels = np.asarray(self.labels, dtype=np.float32) if self.labels else None
        if not self.any_sparse:
            features = np.vstack(self.dense).astype(np.float32, copy=False).reshape(n, feature_dim)
        else:
            features = rows_to_csr(self.dense, self.sparse_keys, feature_dim)
        self.__init__()
        return Minibatch(features, labels)


class RecordDecoder:
    """Decodes consecutive buffers of one RecordIO-protobuf stream into blocks.

    ``feature_dim`` (when known) is enforced for every record; otherwise the first record
    fixes it. ``check_finite`` rejects NaN and infinity in features and labels.
    ``fast_paths=False`` decodes every record on the general path (the reference the fast
    paths are tested against).
    """

    def __init__(self, source: str, feature_dim: int | None = None, check_finite: bool = True,
                 fast_paths: bool = True) -> None:
        self.source = source
        self.fast_paths = fast_paths
        self.feature_dim = feature_dim
        self.check_finite = check_finite
        self.frames = FrameParser(source, judge=self._judge_join)
        self.has_labels: bool | None = None
        self.fast_records = 0  # records decoded on a fast path (for tests and benchmarks)
        self.fast_sparse_records = 0  # of which on the sparse fast path
        self._template: _Template | None = None
        self._sparse_seen = False  # a whole sparse record was decoded: try the sparse path
        self._sparse_window = self._MIN_WINDOW
        self._sparse_backoff = _Backoff()
        self._pending_error: DataError | None = None

    # Bytes of frames the sparse path looks at per try: grows while runs fill it.
    _MIN_WINDOW = 16 << 10
    _MAX_WINDOW = 16 << 20

    def _judge_join(self, payload: bytes) -> int:
        """Scores a candidate join of a split record: plausibility first (:func:`_judge_record`),
        then agreement with the channel's records so far on carrying a label. Two joins can
        both parse (a float whose bytes hold the RecordIO magic splits a record where dmlc
        would), and the one that drops the label every earlier record had is the wrong one."""
        score, labelled = _judge_record(payload)
        if score == 0:
            return 0
        agrees = self.has_labels is None or labelled == self.has_labels
        return 2 * score + agrees

    @property
    def records(self) -> int:
        return self.frames.records_done

    @property
    def frames_seen(self) -> int:
        return self.frames.frames_seen

    def resume(self, records: int, frames: int, has_labels: bool | None) -> None:
        """Continue a stream another decoder began: the counts its errors report and whether
        its records carry labels (used by :mod:`.parallel` when chunks join up)."""
        self.frames.records_done = records
        self.frames.frames_seen = frames
        self.has_labels = has_labels

    def adopt_layout(self, other: "RecordDecoder") -> None:
        """Start with what ``other`` learnt of the stream's record layout (the dense template,
        whether sparse records were seen, the sparse path's window), as a decoder of a later
        chunk of the same stream (:mod:`.parallel`): learning it again on the general path cost
        a quarter of each chunk's time. A template is only a guess checked against every
        frame, so a layout that changed later in the stream is still decoded exactly."""
        self._template = other._template
        self._sparse_seen = other._sparse_seen
        self._sparse_window = other._sparse_window

    def decode(self, buf: np.ndarray, pos: int, end: int, base: int, at_eof: bool) -> tuple[list[Minibatch], int, int]:
        """Decode the whole frames in ``buf[pos:end]`` (``base`` = stream offset of ``buf[0]``).

        Returns (blocks, new pos, bytes needed): new pos is the start of the first incomplete
        frame; bytes needed > 0 says how large one frame is, when it does not fit the buffer.
        At EOF an incomplete frame is an error. Records before a bad one are returned first;
        the error is raised by the next call (so a reader sees every good record, then it).
        """
        if self._pending_error is not None:
            raise self._pending_error
        blocks: list[Minibatch] = []
        rows = _RowCollector()
        try:
            return self._decode(buf, pos, end, base, at_eof, blocks, rows)
        except DataError as exc:
            if not blocks and not len(rows):
                raise
            self._pending_error = exc
            return self._flush(blocks, rows), pos, 0

    def _decode(self, buf: np.ndarray, pos: int, end: int, base: int, at_eof: bool,
                blocks: list[Minibatch], rows: _RowCollector) -> tuple[list[Minibatch], int, int]:
        view = memoryview(buf)
        while pos < end:
            template = self._template
            if template is not None and not self.frames.in_split and pos % 4 == 0:
                count = (end - pos) // template.stride
                if count and bytes(view[pos : pos + HEADER.size]) == template.header:
                    block, nonfinite_rows = template.take(buf, pos, count)
                    if block is not None:
                        n = block.size
                        self._flush(blocks, rows)
                        self._expect_labels(block.labels is not None, base + pos, self.records)
                        self.frames.records_done += n
                        self.frames.frames_seen += n
                        self.fast_records += n
                        blocks.append(self._finish_block(block, self.records, nonfinite_rows))
                        pos += n * template.stride
                        continue
            if self._sparse_seen and not self.frames.in_split and pos % 4 == 0 and self._sparse_backoff.ready():
                consumed = self._sparse_run(buf, pos, end, base, rows, blocks)
                if consumed:
                    pos += consumed
                    continue
            if end - pos < HEADER.size:
                if at_eof:
                    raise DataError(
                        f"truncated frame header: {end - pos} of 8 bytes before end of data",
                        source=self.source, offset=base + pos, record=self.records,
                        fix="The file was cut short; re-create it",
                    )
                break
            length, flag = self.frames.header_at(buf, pos, base)
            frame_len = HEADER.size + padded_length(length)
            if end - pos < HEADER.size + length or (end - pos < frame_len and not at_eof):
                if at_eof:
                    raise DataError(
                        f"truncated record: header announces {length} payload bytes, "
                        f"only {end - pos - HEADER.size} remain before end of data",
                        source=self.source, offset=base + pos, record=self.records,
                        fix="The file was cut short or the length field is corrupt; re-create it",
                    )
                if pos == 0 or frame_len > len(buf):
                    return self._flush(blocks, rows), pos, frame_len
                break
            payload = bytes(view[pos + HEADER.size : pos + HEADER.size + length])
            record = self.frames.frame(payload, flag, base + pos)
            if record is not None:
                dense = self._decode_general(record, rows, base + pos)
                self._sparse_backoff.record_done()
                if self.fast_paths and dense and flag == 0 and end - pos >= frame_len:
                    self._offer_template(bytes(view[pos : pos + frame_len]), payload)
                self._sparse_seen |= self.fast_paths and not dense
            pos += min(frame_len, end - pos)
        return self._flush(blocks, rows), pos, 0

    def _flush(self, blocks: list[Minibatch], rows: _RowCollector) -> list[Minibatch]:
        """``blocks`` with the rows collected on the general path appended as one block."""
        if len(rows):
            records_after = rows.records_after
            blocks.append(self._finish_block(rows.flush(self.feature_dim), records_after))
        return blocks

    def _sparse_run(self, buf: np.ndarray, pos: int, end: int, base: int, rows: _RowCollector,
                    blocks: list[Minibatch]) -> int:
        """Decode a run of sparse records at ``pos`` into ``blocks``; returns the bytes consumed."""
        run = decode_sparse_run(buf, pos, end, self.feature_dim, self.has_labels, self._sparse_window)
        count = 0 if run is None else run.count
        self._sparse_backoff.tried(count)
        if run is None:
            return 0
        if run.nbytes * 2 >= self._sparse_window:
            self._sparse_window = min(self._sparse_window * 4, self._MAX_WINDOW)
        else:
            self._sparse_window = max(self._MIN_WINDOW, run.nbytes * 2)
        self._flush(blocks, rows)
        self.feature_dim = run.feature_dim
        self._expect_labels(run.labels is not None, base + pos, self.records)
        self.frames.records_done += count
        self.frames.frames_seen += count
        self.fast_records += count
        self.fast_sparse_records += count
        block = Minibatch(sorted_csr(run.data, run.indices, run.indptr, count, run.feature_dim), run.labels)
        blocks.append(self._finish_block(block, self.records))
        return run.nbytes

    def _offer_template(self, frame: bytes, payload: bytes) -> None:
        slots = dense_record_slots(payload)
        if slots is not None and slots[0].count == self.feature_dim:
            self._template = _Template.from_frame(frame, slots)

    def _expect_labels(self, present: bool, offset: int, record: int) -> None:
        if self.has_labels is None:
            self.has_labels = present
        elif self.has_labels != present:
            raise DataError(
                "some records carry a label and others do not" if present else
                "record has no label but earlier records of this channel do",
                source=self.source, offset=offset, record=record,
                fix="Write every record of a channel with a label, or none",
            )

    def _decode_general(self, payload: bytes, rows: _RowCollector, offset: int) -> bool:
        """Decode one record into ``rows``; returns whether it was dense."""
        where = dict(source=self.source, offset=offset, record=self.records - 1)
        try:
            record = parse_record(payload)
        except DecodeError as exc:
            raise DataError(f"payload is not an aialgs.data.Record protobuf ({exc})", **where,
                            fix="Is the ContentType right? RecordIO frames must carry Record messages") from None
        if "values" not in record.features:
            keys = sorted(record.features.keys())
            raise DataError(f"record has no 'values' feature (feature keys: {keys})", **where,
                            fix="Features must be stored under features['values']")
        values, keys, shape = _tensor_arrays(record.features["values"], "features", where)
        if keys is None:
            dim = len(values)
            if dim == 0:
                raise DataError("record's features tensor is empty (no values, no shape)", **where,
                                fix="Give every record its feature values (a sparse row of zeros: keys [] "
                                "and shape [feature_dim])")
            if shape is not None and math.prod(shape) != dim:
                raise DataError(f"dense record has {dim} values but shape {list(shape)}", **where)
        else:
            if shape is None:
                raise DataError("sparse record (keys present) has no shape", **where,
                                fix="Sparse tensors need shape [feature_dim]")
            dim = _feature_count(shape, where)
            if len(keys) != len(values):
                raise DataError(f"sparse record has {len(keys)} keys but {len(values)} values", **where)
            if len(keys) and int(keys.max()) >= dim:
                raise DataError(f"sparse key {int(keys.max())} is out of range for shape {list(shape)}", **where,
                                fix=f"Keys must be below the feature dimension {dim}")
        if self.feature_dim is None:
            self.feature_dim = dim
        elif dim != self.feature_dim:
            raise DataError(f"record has {dim} features, expected feature_dim {self.feature_dim}", **where,
                            fix="Make every record as long as feature_dim (or set feature_dim to the data's width)")
        label = None
        if "values" in record.label:
            label_values, label_keys, _ = _tensor_arrays(record.label["values"], "label", where)
            if len(label_values) != 1 or label_keys is not None:
                raise DataError(f"label must hold exactly one value, found {len(label_values)}", **where)
            label = float(label_values[0])
        self._expect_labels(label is not None, offset, where["record"])
        rows.add(values, keys, label, self.records)
        return keys is None

    def _finish_block(self, block: Minibatch, records_after: int,
                      nonfinite_rows: tuple[int | None, int | None] | None = None) -> Minibatch:
        """``block`` after the finiteness checks; ``records_after`` = the stream's record count
        after its last row (the decoder's own count may already include a bad record after it).
        ``nonfinite_rows``: the first rows with NaN/infinity in (features, labels) when already
        known (the dense kernel finds them while copying), else None: they are looked for here."""
        if self.check_finite:
            feature_row, label_row = nonfinite_rows or _nonfinite_rows(block)
            if feature_row is not None:
                raise DataError(
                    "NaN or infinity in features",
                    source=self.source, record=records_after - block.size + feature_row, fix=_NONFINITE_FIX,
                )
            if label_row is not None:
                raise DataError("NaN or infinity in label", source=self.source,
                                record=records_after - block.size + label_row, fix=_NONFINITE_FIX)
        return block

    def finish(self, offset: int) -> None:
        self.frames.finish(offset)


def _nonfinite_rows(block: Minibatch) -> tuple[int | None, int | None]:
    """The first rows of ``block`` holding NaN or infinity in (features, labels), or None."""
    return first_nonfinite_row(block.features), (
        None if block.labels is None else first_nonfinite_row(block.labels))


def _feature_count(shape: list[int], where: dict) -> int:
    """The feature count a sparse tensor's shape declares (the product of its dimensions,
    computed exactly: shape values are uint64 and fixed-width products wrap), range-checked
    against :data:`~.minibatch.MAX_FEATURE_DIM`."""
    count = math.prod(shape)
    if not 1 <= count <= MAX_FEATURE_DIM:
        raise DataError(f"sparse shape {shape} declares {count} features, outside 1..{MAX_FEATURE_DIM}", **where,
                        fix=f"Sparse tensors need shape [feature_dim] with 1 <= feature_dim <= {MAX_FEATURE_DIM}")
    return count


def _tensor_arrays(value: record_pb2.Value, what: str, where: dict):
    kind = value.WhichOneof("value")
    if kind not in _TENSOR_KINDS:
        raise DataError(f"{what} tensor of type '{kind}' cannot be used as numbers", **where,
                        fix="Use Float32Tensor, Float64Tensor or Int32Tensor")
    tensor = getattr(value, kind)
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused after the cast
        values = np.asarray(tensor.values, dtype=np.float32)
    # Keys make a tensor sparse; so does a shape with no values at all (an all-zero sparse row).
    sparse = len(tensor.keys) > 0 or (len(values) == 0 and len(tensor.shape) > 0)
    keys = np.asarray(tensor.keys, dtype=np.uint64) if sparse else None
    shape = [int(s) for s in tensor.shape] if len(tensor.shape) else None
    return values, keys, shape
